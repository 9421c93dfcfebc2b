//! Poison on every queue: each goes to its dead-letter queue with its reason, and nothing else does.

use std::time::{Duration, Instant};

use ordermesh_bus::Topology;
use ordermesh_messages::{Envelope, kinds};

use crate::{SETTLE_BOUND, harness::Suite};

/// Runs the scenario on `suite` and records its row.
pub(crate) async fn run(suite: &mut Suite) {
    let topology = Topology::default();
    let mut sent = 0;
    for queue in topology.work_queues() {
        suite.publish(&queue, b"{ not json").await;
        suite.publish(&queue, &Envelope::new("order.teleport", &serde_json::json!({})).to_vec()).await;
        let impossible = match queue.as_str() {
            q if q == topology.cart_jobs() => Envelope::new(
                kinds::CART_ADD_ITEM,
                &serde_json::json!({"client_id": "x", "product_id": "y", "quantity": 0}),
            ),
            q if q == topology.checkout_jobs() => {
                Envelope::new(kinds::ORDER_PLACE, &serde_json::json!({"order_id": "o", "lines": []}))
            }
            q if q == topology.checkout_queries() => {
                Envelope::new(kinds::ORDER_GET, &serde_json::json!({"order_id": ""}))
            }
            q if q == topology.payment_results() => {
                Envelope::new(kinds::PAYMENT_RESULT, &serde_json::json!({"outcome": "maybe"}))
            }
            q if q == topology.notifier_jobs() => Envelope::new(
                kinds::CLIENT_PUT_PROFILE,
                &serde_json::json!({"client_id": "x", "email": "not an address"}),
            ),
            q if q == topology.notifier_events() => Envelope::new(
                kinds::events::ORDER_CONFIRMED,
                &serde_json::json!({"order_id": "o", "client_id": "x", "status": 7}),
            ),
            _ => Envelope::new(kinds::PAYMENT_CHARGE, &serde_json::json!({"payment_id": "p", "amount_cents": "lots"})),
        };
        suite.publish(&queue, &impossible.to_vec()).await;
        sent += 3;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let dead = loop {
        let dead = suite.dead_letters(false).await;
        if dead.values().map(Vec::len).sum::<usize>() >= sent || Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let exact = dead.len() == topology.work_queues().len()
        && dead.values().all(|r| r.len() == 3 && r.iter().all(|x| x != "<no reason>"));
    let _ = suite.dead_letters(true).await;
    let (mut result, mut recovery) = suite.check(&[], Instant::now(), SETTLE_BOUND).await;
    if !exact {
        result = "FAIL".into();
        recovery = format!("dead letters were {dead:?}");
    }
    suite.record(
        "poison messages on every queue",
        "malformed JSON, an unknown type and an impossible payload on each of the 7 work queues",
        "0".into(),
        "each DLQ holds exactly its 3, each with x-ordermesh-reason; the consumers carry on",
        (result, recovery),
    );
}
