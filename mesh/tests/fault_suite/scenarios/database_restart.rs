//! PostgreSQL stopped (fast: sessions cut) and started.

use std::time::{Duration, Instant};

use crate::{SETTLE_BOUND, harness::Suite};

/// Runs the scenario on `suite` and records its row.
pub(crate) async fn run(suite: &mut Suite) {
    let load = suite.stream("postgres").await;
    load.wait_for_orders(15).await;
    let in_flight = suite.in_flight().await;
    suite.pg.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    suite.pg.start();
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted = load.stop().await;
    let (result, recovery) = suite.check(&accepted, back, SETTLE_BOUND).await;
    let outcome = (result, format!("all final {recovery} after it returned"));
    suite.record(
        "PostgreSQL stopped and started",
        "pg_ctl stop -m fast of the private cluster, started 2 s later",
        in_flight,
        "every order final; audit clean",
        outcome,
    );
}
