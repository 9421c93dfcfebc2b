//! A reservation that expires while the payment is pending: the order fails and the money goes back.

use std::time::{Duration, Instant};

use crate::harness::Suite;

/// Runs the scenario on `suite` and records its row.
pub(crate) async fn run(suite: &mut Suite) {
    let checkout_env = suite.restart_with("checkout-manager", &[("CHECKOUT_RESERVATION_TTL_SECONDS", "1")]);
    suite.respawn("checkout-manager", None).await;
    let payment_env = suite.restart_with("payment-gateway", &[("PAYMENT_LATENCY_MS", "2500")]);
    suite.respawn("payment-gateway", None).await;
    let load = suite.stream("expiry").await;
    load.wait_for_orders(5).await;
    let accepted = load.stop().await;
    let outcome = suite.check(&accepted, Instant::now(), Duration::from_secs(20)).await;
    let refunded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'FAILED' AND order_id = ANY($1)")
            .bind(&accepted)
            .fetch_one(&suite.checkout_db)
            .await
            .unwrap();
    suite.record(
        "reservation expires while payment is pending",
        "reservation TTL 1 s, provider latency 2.5 s",
        format!("{}", accepted.len()),
        "orders FAILED with the hold expired and the charge refunded (audit: none kept)",
        (outcome.0, format!("{}; {refunded} of {} FAILED", outcome.1, accepted.len())),
    );
    suite.respawn("checkout-manager", Some(checkout_env)).await;
    suite.respawn("payment-gateway", Some(payment_env)).await;
}
