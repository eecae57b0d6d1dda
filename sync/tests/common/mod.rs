//! Shared helpers for the real-thread stress tests.
//!
//! Test bodies are written against [`Spawn`], not `std::thread`, so the same bodies can be run
//! with fibers once the scheduler is integrated: implement `Spawn` with `filament::spawn` and
//! call the body functions from a `filament::run` closure.
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

/// A unit of concurrent work.
pub type Task = Box<dyn FnOnce() + Send + 'static>;

/// Runs tasks concurrently (threads or fibers) and waits for all of them.
pub trait Spawn {
    /// Starts every task, waits for all, and re-raises the first panic.
    fn run_all(&self, tasks: Vec<Task>);
}

/// Each task on its own OS thread.
pub struct Threads;

impl Spawn for Threads {
    fn run_all(&self, tasks: Vec<Task>) {
        let handles: Vec<_> = tasks.into_iter().map(std::thread::spawn).collect();
        let mut panic = None;
        for h in handles {
            if let Err(e) = h.join() {
                panic.get_or_insert(e);
            }
        }
        if let Some(e) = panic {
            std::panic::resume_unwind(e);
        }
    }
}

/// Builds `n` tasks from `f(i)`.
pub fn tasks<F>(n: usize, f: F) -> Vec<Task>
where
    F: Fn(usize) -> Task,
{
    (0..n).map(f).collect()
}

/// A seed from `FILAMENT_SEED` or the clock; printed if the test fails while the guard lives.
pub struct Seed {
    pub value: u64,
}

impl Seed {
    pub fn new() -> Seed {
        let value = std::env::var("FILAMENT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        Seed { value }
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed with FILAMENT_SEED={}", self.value);
        }
    }
}

/// A small xorshift generator for test randomness.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
