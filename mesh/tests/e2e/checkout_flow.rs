//! The saga's outcomes end to end: confirmed, rejected, declined, retried, failed.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use serde_json::Value;

use crate::helpers::{Options, spawn_mesh, spawn_mesh_with};

fn timeline(order: &Value) -> Vec<(String, String)> {
    order["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["step"].as_str().unwrap().to_owned(), t["outcome"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_checkout_confirm_decrements_stock_and_publishes_events() {
    let mesh = spawn_mesh().await;
    mesh.product("mug", 1250, 10).await;
    mesh.product("poster", 899, 5).await;

    // Listen to the order-events topic exchange as another system (shipping, email) would.
    let conn = lapin::Connection::connect(ordermesh_bus::DEFAULT_AMQP_URL, Default::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let events_queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            Default::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            events_queue.name().clone(),
            mesh.topology.order_events().as_str().into(),
            "order.*".into(),
            QueueBindOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let mut events = channel
        .basic_consume(
            events_queue.name().clone(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            Default::default(),
        )
        .await
        .unwrap();

    assert_eq!(mesh.add("alice", "mug", 2).await, (200, serde_json::json!({"status": "success", "error": ""})));
    assert_eq!(mesh.add("alice", "mug", 1).await.0, 200, "adding again adds to the quantity");
    assert_eq!(mesh.add("alice", "poster", 1).await.0, 200);
    let (status, cart) = mesh.get("/cart/alice").await;
    assert_eq!(status, 200);
    assert_eq!(cart["items"][0]["productID"], "mug");
    assert_eq!(cart["items"][0]["quantity"], 3);
    assert_eq!(cart["totalCents"], 3 * 1250 + 899);

    let order_id = mesh.checkout("alice").await;
    // Readable at once after the 202, before or after checkout-manager has taken it in.
    let (status, early) = mesh.get(&format!("/orders/{order_id}")).await;
    assert_eq!(status, 200, "{early}");
    assert_eq!(early["orderID"], order_id.as_str());
    let order = mesh.final_order(&order_id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["clientID"], "alice");
    assert_eq!(order["totalCents"], 3 * 1250 + 899);
    assert_eq!(order["items"].as_array().unwrap().len(), 2, "multi-line order");
    assert_eq!(order["items"][0]["unitPriceCents"], 1250);
    let steps = timeline(&order);
    for expected in [("created", "ok"), ("reserve", "ok"), ("payment", "ok"), ("commit", "ok")] {
        assert!(steps.contains(&(expected.0.into(), expected.1.into())), "{expected:?} missing from {steps:?}");
    }
    assert_eq!(mesh.stock("mug").await, (7, 0, 7));
    assert_eq!(mesh.stock("poster").await, (4, 0, 4));
    assert_eq!(mesh.get("/cart/alice").await.1["items"], serde_json::json!([]), "checkout empties the cart");

    let mut seen = Vec::new();
    while !seen.contains(&"order.confirmed".to_owned()) {
        let delivery = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        let envelope: Value = serde_json::from_slice(&delivery.data).unwrap();
        assert_eq!(envelope["payload"]["order_id"], order_id.as_str());
        seen.push(delivery.routing_key.to_string());
    }
    assert_eq!(seen, ["order.created", "order.reserved", "order.payment_pending", "order.confirmed"]);
    let _ = conn.close(200, "ok".into()).await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_stock_at_checkout_is_rejected_and_holds_nothing() {
    let mesh = spawn_mesh().await;
    mesh.product("lamp", 6000, 3).await;
    mesh.product("mug", 100, 10).await;
    assert_eq!(mesh.add("bob", "lamp", 3).await.0, 200);
    assert_eq!(mesh.add("bob", "mug", 1).await.0, 200);
    // Stock drops between add and checkout (a sale elsewhere).
    mesh.product("lamp", 6000, 1).await;

    let order = mesh.final_order(&mesh.checkout("bob").await).await;
    assert_eq!(order["status"], "REJECTED", "{order}");
    let reject = order["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["outcome"] == "rejected")
        .expect("rejection in timeline");
    assert!(reject["detail"].as_str().unwrap().contains("lamp"), "{reject}");
    assert_eq!(mesh.stock("lamp").await, (1, 0, 1));
    assert_eq!(mesh.stock("mug").await, (10, 0, 10), "all or nothing: the other line was not held");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_funds_is_declined_and_the_reservation_rolled_back() {
    let mesh = spawn_mesh().await;
    mesh.product("lamp", 60_000, 5).await;
    assert_eq!(mesh.add("carol", "lamp", 2).await.0, 200); // 1,200.00 against the default 1,000.00

    let order_id = mesh.checkout("carol").await;
    let order = mesh.final_order(&order_id).await;
    assert_eq!(order["status"], "PAYMENT_DECLINED", "{order}");
    let steps = timeline(&order);
    assert!(steps.contains(&("payment".into(), "declined".into())), "{steps:?}");
    assert!(steps.contains(&("roll_back".into(), "ok".into())), "{steps:?}");
    assert_eq!(mesh.stock("lamp").await, (5, 0, 5), "the hold was released");
    let balance: i64 = sqlx::query_scalar("SELECT balance_cents FROM payment_accounts WHERE client_id = 'carol'")
        .fetch_one(&mesh.payment_db)
        .await
        .unwrap();
    assert_eq!(balance, 100_000, "nothing was charged");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn technical_payment_failures_are_retried_then_confirmed_with_one_charge() {
    let mesh =
        spawn_mesh_with(Options { payment: Box::new(|p| p.simulator.fail_first_attempts = 2), ..Default::default() })
            .await;
    mesh.product("mug", 1000, 5).await;
    assert_eq!(mesh.add("dan", "mug", 1).await.0, 200);
    let order_id = mesh.checkout("dan").await;
    let order = mesh.final_order(&order_id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    let retries = timeline(&order).iter().filter(|s| *s == &("payment".to_owned(), "retry".to_owned())).count();
    assert_eq!(retries, 2, "two technical failures, then success");
    assert_eq!(mesh.count_payments("SELECT count(*) FROM payment_charges WHERE payment_id = $1", &order_id).await, 1);
    let balance: i64 = sqlx::query_scalar("SELECT balance_cents FROM payment_accounts WHERE client_id = 'dan'")
        .fetch_one(&mesh.payment_db)
        .await
        .unwrap();
    assert_eq!(balance, 100_000 - 1000, "charged exactly once");
    assert_eq!(mesh.stock("mug").await, (4, 0, 4));
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_payment_retries_fail_the_order_and_release_stock() {
    let mesh = spawn_mesh_with(Options {
        payment: Box::new(|p| p.simulator.failure_rate = 1.0),
        checkout: Box::new(|c| c.saga.max_payment_attempts = 3),
        ..Default::default()
    })
    .await;
    mesh.product("mug", 1000, 5).await;
    assert_eq!(mesh.add("erin", "mug", 2).await.0, 200);
    let order = mesh.final_order(&mesh.checkout("erin").await).await;
    assert_eq!(order["status"], "FAILED", "{order}");
    let steps = timeline(&order);
    assert_eq!(steps.iter().filter(|s| s.0 == "payment" && s.1 == "requested").count(), 3, "{steps:?}");
    assert!(steps.contains(&("roll_back".into(), "ok".into())), "{steps:?}");
    assert_eq!(mesh.stock("mug").await, (5, 0, 5));
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_order_read_is_woken_by_the_orders_final_event_not_by_polling() {
    // Payment takes 2 s, and a waiting read would ask again only after 60 s: only the order's final event
    // can answer a 20 s wait before its deadline.
    let mesh = spawn_mesh_with(Options {
        payment: Box::new(|p| p.simulator.latency = Duration::from_secs(2)),
        gateway_wait_poll: Some(Duration::from_secs(60)),
        ..Default::default()
    })
    .await;
    mesh.product("mug", 100, 5).await;
    assert_eq!(mesh.add("wes", "mug", 1).await.0, 200);
    let order_id = mesh.checkout("wes").await;
    let order_reads = || async {
        let text = mesh.http.get(mesh.url("/metrics")).send().await.unwrap().text().await.unwrap();
        crate::metrics::value(&text, "amqp_messages_published_total", &[("kind", "order.get")]).unwrap_or(0.0)
    };
    let reads_before = order_reads().await;
    let started = std::time::Instant::now();
    let (status, order) = mesh.get(&format!("/orders/{order_id}?waitSeconds=20")).await;
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["status"], "CONFIRMED", "answered with {order} after {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "woken at the deadline, not by the event: {:?}",
        started.elapsed()
    );
    // The final event carries the whole order: the woken read answers with it, without asking checkout-manager,
    // and what it answers is exactly what the order's store shows afterwards.
    assert_eq!(order_reads().await, reads_before, "the woken read asked checkout-manager");
    let (_, stored) = mesh.get(&format!("/orders/{order_id}")).await;
    assert_eq!(order, stored, "the event's order differs from the stored one");
    assert!(order["timeline"].as_array().unwrap().len() >= 4, "{order}");

    // The same checkout replayed (same key) names an order that has already ended: a waiting read of it
    // answers at once, not after waiting for an event that came before it.
    let replay = |key: &'static str| {
        mesh.http
            .post(mesh.url("/checkOutCart"))
            .header("Idempotency-Key", key)
            .json(&serde_json::json!({"clientID": "vic"}))
            .send()
    };
    assert_eq!(mesh.add("vic", "mug", 1).await.0, 200);
    let first: serde_json::Value = replay("vic-1").await.unwrap().json().await.unwrap();
    let vic_order = first["orderID"].as_str().unwrap().to_owned();
    assert_eq!(mesh.final_order(&vic_order).await["status"], "CONFIRMED");
    let again: serde_json::Value = replay("vic-1").await.unwrap().json().await.unwrap();
    assert_eq!(again["orderID"], first["orderID"], "the same order");
    let started = std::time::Instant::now();
    let (_, order) = mesh.get(&format!("/orders/{vic_order}?waitSeconds=20")).await;
    assert_eq!(order["status"], "CONFIRMED");
    assert!(started.elapsed() < Duration::from_secs(2), "an ended order is answered at once: {:?}", started.elapsed());
    mesh.stop().await;
}
