//! Shutdown: SIGTERM stops each service within its grace period, under load, and nothing is lost.

use std::time::{Duration, Instant};

use crate::{SERVICES, SETTLE_BOUND, harness::Suite};

/// Runs the scenario on `suite` and records its row.
pub(crate) async fn run(suite: &mut Suite) {
    let load = suite.stream("shutdown").await;
    load.wait_for_orders(10).await;
    let in_flight = suite.in_flight().await;
    let mut times = Vec::new();
    for name in SERVICES {
        match suite.service(name).terminate(Duration::from_secs(12)).await {
            Some((took, true)) => times.push(format!("{name} {:.1} s", took.as_secs_f64())),
            other => suite.failures.push(format!("{name} did not exit cleanly within 12 s after SIGTERM: {other:?}")),
        }
    }
    for name in SERVICES {
        suite.service(name).start();
    }
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted = load.stop().await;
    let outcome = suite.check(&accepted, back, SETTLE_BOUND).await;
    suite.record(
        "SIGTERM of every service",
        "SIGTERM to each in turn under load, then all restarted",
        in_flight,
        "each exits 0 within its 10 s grace; every order final; audit clean",
        (outcome.0, format!("all final {} after the restart; exits: {}", outcome.1, times.join(", "))),
    );
}
