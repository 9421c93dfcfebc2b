//! Payment failing technically half of the time.

use std::time::{Duration, Instant};

use crate::harness::Suite;

/// Runs the scenario on `suite` and records its row.
pub(crate) async fn run(suite: &mut Suite) {
    let payment_env = suite.restart_with("payment-gateway", &[("PAYMENT_FAILURE_RATE", "0.5")]);
    suite.respawn("payment-gateway", None).await;
    let load = suite.stream("flaky").await;
    load.wait_for_orders(20).await;
    let accepted = load.stop().await;
    let outcome = suite.check(&accepted, Instant::now(), Duration::from_secs(20)).await;
    suite.record(
        "payment fails technically half of the time",
        "PAYMENT_FAILURE_RATE=0.5",
        "-".into(),
        "retried with one charge per CONFIRMED order; the rest FAILED with nothing kept (audit)",
        outcome,
    );
    suite.respawn("payment-gateway", Some(payment_env)).await;
}
