//! Two minutes of the nemesis on every test run, with a new seed each time (printed, so a failure can be
//! replayed with `ordermesh-nemesis --seed S`). When it finds a violation, its report, history, fault log and
//! the services' logs stay in `target/nemesis/ci-seed-S`.

use std::{
    io::Write as _,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

/// Minutes of faults (`NEMESIS_MINUTES` overrides, e.g. 10 for a long run).
const MINUTES: &str = "2";

#[test]
fn two_minutes_of_overlapping_faults_break_no_promise() {
    let seed: u64 = std::env::var("NEMESIS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let minutes = std::env::var("NEMESIS_MINUTES").unwrap_or_else(|_| MINUTES.to_owned());
    // The faults, plus ten minutes for the mesh's start, the settling, the checks and a slow machine: only a
    // hang reaches it (two minutes take about three and a half in all).
    let faults: f64 = minutes.parse().expect("NEMESIS_MINUTES is a number");
    ordermesh_testkit::watchdog::arm(Duration::from_secs_f64(faults * 60.0 + 600.0));
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../target/nemesis/ci-seed-{seed}"));
    // Straight to the process's stderr, past the test harness's capture: every run's seed shows in CI's log.
    let _ = writeln!(
        std::io::stderr(),
        "nemesis: seed {seed}, {minutes} min; replay with `NEMESIS_SEED={seed} cargo test -p ordermesh-nemesis`"
    );
    let started = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_ordermesh-nemesis"))
        .args(["--minutes", &minutes, "--seed", &seed.to_string(), "--out"])
        .arg(&out)
        .env("RUST_LOG", "warn,ordermesh_nemesis=info")
        .output()
        .expect("ordermesh-nemesis runs");
    let report = String::from_utf8_lossy(&run.stdout);
    eprintln!("{report}\n(the whole run: {:.0} s)", started.elapsed().as_secs_f64());
    assert!(
        run.status.success(),
        "seed {seed}: the nemesis found violations or could not run; its report, history and logs are in {}\n{}",
        out.display(),
        String::from_utf8_lossy(&run.stderr).lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    assert!(report.contains("**Violations: 0.**"), "a passing run reports no violation: {report}");
    let _ = std::fs::remove_dir_all(&out);
}
