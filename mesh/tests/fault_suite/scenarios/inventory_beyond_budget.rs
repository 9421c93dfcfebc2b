//! inventory out of checkout-manager's reach for longer than the saga's retry budget (carts still
//! reach it, so orders keep coming): those orders FAIL cleanly, and nothing stays held.

use std::time::{Duration, Instant};

use crate::{SETTLE_BOUND, harness::Suite};

/// Runs the scenario on `suite` and records its row.
pub(crate) async fn run(suite: &mut Suite) {
    let good = suite.restart_with("checkout-manager", &[("INVENTORY_URL", "http://127.0.0.1:1")]);
    suite.respawn("checkout-manager", None).await;
    let load = suite.stream("inventory-down").await;
    load.wait_for_orders(10).await;
    let in_flight = suite.in_flight().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    suite.respawn("checkout-manager", Some(good)).await;
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let accepted = load.stop().await;
    let (mut result, recovery) = suite.check(&accepted, back, SETTLE_BOUND).await;
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'FAILED' AND order_id = ANY($1)")
        .bind(&accepted)
        .fetch_one(&suite.checkout_db)
        .await
        .unwrap();
    if failed == 0 {
        result = "FAIL".into();
        suite.failures.push("no order ran out of its reserve budget while inventory was out of reach".into());
    }
    suite.record(
        "inventory unreachable beyond the retry budget",
        "checkout-manager restarted with inventory out of reach for ~5 s (reserve budget: 4 tries, ~1.5 s), then restarted with it back",
        in_flight,
        "orders past the budget FAILED with their holds released (audit); none stuck",
        (result, format!("all final {recovery} after inventory was back in reach")),
    );
}
