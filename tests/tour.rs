//! The README's tour (`examples/tour.rs`), run as the user runs it, through `cargo run`: the quick
//! mode must pass every step's own checks and print the summary table; `--help` must explain the
//! steps; an unknown flag must be refused with status 2.

use std::process::{Command, Output};
use std::time::Instant;

/// `cargo run --quiet --example tour -- <args>`, in the same profile as this test.
fn tour(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "--quiet", "--example", "tour"]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    cmd.arg("--").args(args);
    cmd.output().expect("run `cargo run --example tour`")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn quick_tour_passes_every_step_and_prints_the_summary() {
    let started = Instant::now();
    let out = tour(&["--quick"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "the quick tour failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    eprintln!("quick tour (build included): {:.1?}", started.elapsed());

    // One progress line per step, in order.
    let mut at = 0;
    for (i, step) in [
        "spawn", "skynet", "pipeline", "park", "echo", "native", "metrics",
    ]
    .iter()
    .enumerate()
    {
        let line = format!("[{}/7] {step}", i + 1);
        at += stdout[at..]
            .find(&line)
            .unwrap_or_else(|| panic!("no progress line `{line}` (in order) in:\n{stdout}"));
    }
    // The metrics block.
    for field in ["workers", "fibers", "stack memory"] {
        assert!(
            stdout[at..]
                .lines()
                .any(|l| l.trim_start().starts_with(field)),
            "no metrics line `{field}` in:\n{stdout}"
        );
    }
    // The summary table: a header, a rule, and one row per step with its figure.
    let summary = &stdout[stdout.find("\nsummary (quick run").unwrap_or_else(|| {
        panic!("no summary in:\n{stdout}");
    })..];
    let rows: Vec<&str> = summary.lines().map(str::trim_start).collect();
    assert!(
        rows.iter()
            .any(|l| l.starts_with("step") && l.contains("workload") && l.contains("result")),
        "no table header in:\n{summary}"
    );
    assert!(
        rows.iter().any(|l| l.starts_with("----")),
        "no rule in:\n{summary}"
    );
    for (step, figure) in [
        ("spawn", "ns/fiber"),
        ("skynet", "checked"),
        ("pipeline", "messages/s"),
        ("park", "/fiber RSS"),
        ("echo", "round trips/s"),
        ("native", "ns/call"),
    ] {
        assert!(
            rows.iter()
                .any(|l| l.starts_with(&format!("{step} ")) && l.contains(figure)),
            "no `{step}` row showing `{figure}` in:\n{summary}"
        );
    }
}

#[test]
fn help_explains_every_step() {
    let out = tour(&["--help"]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "--help failed ({}): {}",
        out.status,
        text(&out.stderr)
    );
    for word in [
        "USAGE", "--quick", "spawn", "skynet", "pipeline", "park", "echo", "native", "metrics",
    ] {
        assert!(
            stdout.contains(word),
            "--help does not mention `{word}`:\n{stdout}"
        );
    }
}

#[test]
fn unknown_flags_are_refused_with_status_2() {
    let out = tour(&["--frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "status of an unknown flag");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--frobnicate") && stderr.contains("USAGE"),
        "stderr should name the flag and show the usage:\n{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout for a bad flag");
}
