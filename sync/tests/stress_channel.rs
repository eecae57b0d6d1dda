//! Real-thread stress tests of the channels and `select!`. Bodies take a `Spawn` (see `common`).
// Real threads and std time: meaningless (and panicking) under loom.
#![cfg(not(loom))]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{tasks, Rng, Seed, Spawn, Threads};
use filament_sync::channel::{
    self, bounded, oneshot, unbounded, Receiver, RecvError, RecvTimeoutError, SendTimeoutError,
    Sender, TryRecvError, TrySendError,
};
use filament_sync::select;

const SHIFT: u32 = 32;

/// `senders` x `per` values through the channel, read by `receivers`; every value arrives
/// exactly once and each receiver sees each sender's values in increasing order.
pub fn mpmc(
    sp: &impl Spawn,
    (tx, rx): (Sender<u64>, Receiver<u64>),
    senders: usize,
    receivers: usize,
    per: usize,
    seed: u64,
) {
    let seen = Arc::new(
        (0..senders * per)
            .map(|_| AtomicBool::new(false))
            .collect::<Vec<_>>(),
    );
    let mut ts = tasks(senders, |s| {
        let tx = tx.clone();
        let mut rng = Rng::new(seed ^ s as u64);
        Box::new(move || {
            for i in 0..per {
                let v = ((s as u64) << SHIFT) | i as u64;
                match rng.below(4) {
                    0 => loop {
                        match tx.try_send(v) {
                            Ok(()) => break,
                            Err(TrySendError::Full(_)) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    },
                    1 => loop {
                        match tx.send_timeout(v, Duration::from_micros(50)) {
                            Ok(()) => break,
                            Err(SendTimeoutError::Timeout(_)) => {}
                            Err(e) => panic!("{e}"),
                        }
                    },
                    _ => tx.send(v).unwrap(),
                }
            }
        })
    });
    drop(tx);
    ts.extend(tasks(receivers, |r| {
        let (rx, seen) = (rx.clone(), seen.clone());
        let mut rng = Rng::new(seed ^ (r as u64) << 20);
        Box::new(move || {
            let mut last = vec![None::<u64>; senders];
            loop {
                let v = match rng.below(4) {
                    0 => match rx.try_recv() {
                        Ok(v) => v,
                        Err(TryRecvError::Empty) => {
                            std::thread::yield_now();
                            continue;
                        }
                        Err(TryRecvError::Disconnected) => break,
                    },
                    1 => match rx.recv_timeout(Duration::from_micros(50)) {
                        Ok(v) => v,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    },
                    _ => match rx.recv() {
                        Ok(v) => v,
                        Err(RecvError) => break,
                    },
                };
                let (s, i) = ((v >> SHIFT) as usize, v & 0xffff_ffff);
                assert!(
                    last[s].is_none_or(|l| l < i),
                    "sender {s}: {i} after {:?}",
                    last[s]
                );
                last[s] = Some(i);
                assert!(
                    !seen[s * per + i as usize].swap(true, Relaxed),
                    "duplicate {s}/{i}"
                );
            }
        })
    }));
    drop(rx);
    sp.run_all(ts);
    let missing = seen.iter().filter(|s| !s.load(Relaxed)).count();
    assert_eq!(missing, 0, "values lost");
}

#[test]
fn mpmc_rendezvous() {
    let seed = Seed::new();
    mpmc(&Threads, bounded(0), 4, 4, 5_000, seed.value);
}

#[test]
fn mpmc_bounded_1() {
    let seed = Seed::new();
    mpmc(&Threads, bounded(1), 4, 4, 10_000, seed.value);
}

#[test]
fn mpmc_bounded_16() {
    let seed = Seed::new();
    mpmc(&Threads, bounded(16), 8, 8, 10_000, seed.value);
}

#[test]
fn mpmc_unbounded() {
    let seed = Seed::new();
    mpmc(&Threads, unbounded(), 8, 4, 20_000, seed.value);
}

#[test]
fn spsc_order() {
    for (tx, rx) in [bounded(0), bounded(3), unbounded()] {
        let h = std::thread::spawn(move || (0..10_000).for_each(|i| tx.send(i).unwrap()));
        assert!(rx.iter().eq(0..10_000));
        h.join().unwrap();
    }
}

#[test]
fn disconnection() {
    // All senders gone: drain, then error.
    let (tx, rx) = bounded(4);
    tx.send(1).unwrap();
    tx.send(2).unwrap();
    let tx2 = tx.clone();
    drop(tx);
    assert_eq!(rx.recv(), Ok(1));
    drop(tx2);
    assert_eq!(rx.recv(), Ok(2));
    assert_eq!(rx.recv(), Err(RecvError));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    // All receivers gone: the value comes back.
    let (tx, rx) = unbounded::<String>();
    drop(rx);
    assert_eq!(tx.send("x".into()).unwrap_err().into_inner(), "x");
    assert!(tx.is_disconnected());
    // Blocked receivers and senders are woken by disconnection.
    for cap in [0, 1] {
        let (tx, rx) = bounded::<i32>(cap);
        let rxs: Vec<_> = (0..3)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || rx.recv())
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        drop(tx);
        for h in rxs {
            assert_eq!(h.join().unwrap(), Err(RecvError));
        }
        let (tx, rx) = bounded::<i32>(cap);
        if cap == 1 {
            tx.send(0).unwrap();
        }
        let txs: Vec<_> = (0..3)
            .map(|i| {
                let tx = tx.clone();
                std::thread::spawn(move || tx.send(i))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        drop(rx);
        let mut back: Vec<_> = txs
            .into_iter()
            .map(|h| h.join().unwrap().unwrap_err().into_inner())
            .collect();
        back.sort();
        assert_eq!(back, vec![0, 1, 2]);
    }
}

#[test]
fn timeouts() {
    let (tx, rx) = bounded::<i32>(0);
    let t = Instant::now();
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(30)),
        Err(RecvTimeoutError::Timeout)
    );
    assert!(t.elapsed() >= Duration::from_millis(30));
    let t = Instant::now();
    assert!(tx
        .send_timeout(5, Duration::from_millis(30))
        .unwrap_err()
        .is_timeout());
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert!(tx.try_send(5).unwrap_err().is_full());
    // Nothing stale is left: a later rendezvous works normally.
    let h = std::thread::spawn(move || rx.recv_timeout(Duration::from_secs(5)));
    tx.send(7).unwrap();
    assert_eq!(h.join().unwrap(), Ok(7));
    // Racing timeouts against sends never loses or duplicates a value.
    let (tx, rx) = bounded::<u32>(0);
    let h = std::thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < 2000 {
            if let Ok(v) = rx.recv_timeout(Duration::from_micros(10)) {
                got.push(v);
            }
        }
        got
    });
    let mut sent = 0;
    while sent < 2000 {
        if tx.send_timeout(sent, Duration::from_micros(10)).is_ok() {
            sent += 1;
        }
    }
    assert!(h.join().unwrap().into_iter().eq(0..2000));
}

#[test]
fn oneshot_basics() {
    let (tx, rx) = oneshot();
    let h = std::thread::spawn(move || rx.recv());
    tx.send(3).unwrap();
    assert_eq!(h.join().unwrap(), Ok(3));
    let (tx, rx) = oneshot::<i32>();
    drop(tx);
    assert_eq!(rx.recv(), Err(RecvError));
    let (tx, rx) = oneshot::<i32>();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(5)),
        Err(RecvTimeoutError::Timeout)
    );
    drop(rx);
    assert!(tx.is_closed());
    assert_eq!(tx.send(1).unwrap_err().into_inner(), 1);
}

#[test]
fn select_fairness() {
    let (tx1, rx1) = unbounded::<u8>();
    let (tx2, rx2) = unbounded::<u8>();
    let (tx3, rx3) = bounded::<u8>(3000);
    const N: usize = 3000;
    for _ in 0..N {
        tx1.send(1).unwrap();
        tx2.send(2).unwrap();
        tx3.send(3).unwrap();
    }
    let mut hits = [0usize; 4];
    for _ in 0..N {
        let i = select! {
            recv(rx1) -> v => v.unwrap(),
            recv(rx2) -> v => v.unwrap(),
            recv(rx3) -> v => v.unwrap(),
        };
        hits[i as usize] += 1;
    }
    for (arm, &h) in hits.iter().enumerate().skip(1) {
        assert!(h > N / 3 / 2, "arm {arm} picked {h} of {N} times: {hits:?}");
    }
}

#[test]
fn select_default_and_timeout() {
    let (tx, rx) = bounded::<i32>(1);
    let r = select! {
        recv(rx) -> _v => 1,
        default => 0,
    };
    assert_eq!(r, 0);
    let t = Instant::now();
    let r = select! {
        recv(rx) -> _v => 1,
        timeout(Duration::from_millis(30)) => 0,
    };
    assert_eq!(r, 0);
    assert!(t.elapsed() >= Duration::from_millis(30));
    // send arm on a full channel vs recv arm on an empty one: nothing ready.
    tx.send(1).unwrap();
    let (tx2, rx2) = bounded::<i32>(0);
    let r = select! {
        send(tx, 2) -> _r => 1,
        recv(rx2) -> _v => 2,
        default => 0,
    };
    assert_eq!(r, 0);
    let h = std::thread::spawn(move || tx2.send(9));
    let r = select! {
        send(tx, 2) -> _r => 1,
        recv(rx2) -> v => v.unwrap(),
    };
    assert_eq!(r, 9);
    h.join().unwrap().unwrap();
    // break/continue in a body refer to the caller's loop.
    let mut n = 0;
    loop {
        select! {
            recv(rx) -> _v => { n += 1; continue; }
            default => break,
        }
    }
    assert_eq!(n, 1);
}

#[test]
fn select_send_and_recv_rendezvous() {
    // select-vs-select on rendezvous channels, both directions, many rounds.
    let (tx_a, rx_a) = bounded::<u32>(0);
    let (tx_b, rx_b) = bounded::<u32>(0);
    const N: u32 = 2000;
    let h = std::thread::spawn(move || {
        let (mut sent, mut got) = (0, 0);
        while sent < N || got < N {
            if sent < N {
                select! {
                    send(tx_a, sent) -> r => { r.unwrap(); sent += 1; }
                    recv(rx_b) -> v => { assert_eq!(v.unwrap(), got); got += 1; }
                }
            } else {
                assert_eq!(rx_b.recv().unwrap(), got);
                got += 1;
            }
        }
    });
    let (mut sent, mut got) = (0, 0);
    while sent < N || got < N {
        if sent < N && got < N {
            select! {
                send(tx_b, sent) -> r => { r.unwrap(); sent += 1; }
                recv(rx_a) -> v => { assert_eq!(v.unwrap(), got); got += 1; }
            }
        } else if sent < N {
            tx_b.send(sent).unwrap();
            sent += 1;
        } else {
            assert_eq!(rx_a.recv().unwrap(), got);
            got += 1;
        }
    }
    h.join().unwrap();
}

/// Several selecting receivers over several channels with many senders: exactly once, in
/// per-sender order, and disconnection ends every select.
pub fn select_mpmc(sp: &impl Spawn, cap: usize, per: usize) {
    let chans: Vec<_> = (0..3).map(|_| bounded::<u64>(cap)).collect();
    let total = 3 * 2 * per;
    let count = Arc::new(AtomicUsize::new(0));
    let mut ts = Vec::new();
    for (c, (tx, _)) in chans.iter().enumerate() {
        for s in 0..2 {
            let tx = tx.clone();
            ts.push(Box::new(move || {
                for i in 0..per {
                    tx.send(((c * 2 + s) as u64) << SHIFT | i as u64).unwrap();
                }
            }) as common::Task);
        }
    }
    let rxs: Vec<Receiver<u64>> = chans.iter().map(|(_, rx)| rx.clone()).collect();
    drop(chans);
    for _ in 0..3 {
        let rxs = rxs.clone();
        let count = count.clone();
        ts.push(Box::new(move || {
            let mut last = [None::<u64>; 6];
            let mut open = [true; 3];
            while open.iter().any(|&o| o) {
                let (k, v) = select! {
                    recv(rxs[0]) -> v => (0, v),
                    recv(rxs[1]) -> v => (1, v),
                    recv(rxs[2]) -> v => (2, v),
                };
                match v {
                    Ok(v) => {
                        let (s, i) = ((v >> SHIFT) as usize, v & 0xffff_ffff);
                        assert!(last[s].is_none_or(|l| l < i));
                        last[s] = Some(i);
                        count.fetch_add(1, Relaxed);
                    }
                    Err(_) => {
                        open[k] = false;
                        // A disconnected arm is always ready: stop selecting on it by
                        // draining the others directly when only they remain.
                        if open.iter().all(|&o| !o) {
                            break;
                        }
                        for (j, rx) in rxs.iter().enumerate() {
                            if open[j] {
                                for v in rx.iter() {
                                    let (s, i) = ((v >> SHIFT) as usize, v & 0xffff_ffff);
                                    assert!(last[s].is_none_or(|l| l < i));
                                    last[s] = Some(i);
                                    count.fetch_add(1, Relaxed);
                                }
                                open[j] = false;
                            }
                        }
                    }
                }
            }
        }));
    }
    drop(rxs);
    sp.run_all(ts);
    assert_eq!(count.load(Relaxed), total);
}

#[test]
fn select_mpmc_threads() {
    select_mpmc(&Threads, 0, 3000);
    select_mpmc(&Threads, 2, 5000);
}

#[test]
fn select_api_many_arms() {
    // More arms than the inline capacity, through the non-macro API.
    let chans: Vec<_> = (0..12).map(|_| unbounded::<usize>()).collect();
    chans[10].0.send(10).unwrap();
    let arms: Vec<_> = chans
        .iter()
        .map(|(_, rx)| channel::RecvArm::new(rx))
        .collect();
    let mut sel = channel::Select::new();
    for a in &arms {
        sel.recv(a);
    }
    assert_eq!(sel.select_timeout(Duration::from_secs(5)), Some(10));
    drop(sel);
    let a = arms.into_iter().nth(10).unwrap();
    assert!(a.is_selected());
    assert_eq!(a.into_result(), Ok(10));
}

#[test]
fn try_send_reaches_selecting_receiver() {
    let (tx, rx) = bounded::<u32>(0);
    let (_tx2, rx2) = bounded::<u32>(0);
    let h = std::thread::spawn(move || {
        select! {
            recv(rx) -> v => v.unwrap(),
            recv(rx2) -> v => v.unwrap() + 100,
        }
    });
    let t = Instant::now();
    loop {
        match tx.try_send(5) {
            Ok(()) => break,
            Err(TrySendError::Full(_)) => {
                assert!(t.elapsed() < Duration::from_secs(5), "select never offered");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(h.join().unwrap(), 5);
}
