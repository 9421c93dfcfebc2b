//! Messages the broker loses after confirming them (RabbitMQ 3.10's quorum queues can, across a partition):
//! the hand-over of an order and a refund are made sure of end to end, so neither is lost with its message.

use std::time::{Duration, Instant};

use crate::helpers::{Options, spawn_mesh, spawn_mesh_with};

async fn purge(queue: &str) -> u32 {
    let purge = async {
        let conn = lapin::Connection::connect(ordermesh_bus::DEFAULT_AMQP_URL, Default::default()).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        let purged = channel.queue_purge(queue.into(), Default::default()).await.unwrap();
        let _ = conn.close(200, "ok".into()).await;
        purged
    };
    tokio::time::timeout(Duration::from_secs(10), purge).await.expect("the broker purges a queue within 10 s")
}

async fn eventually(what: &str, within: Duration, mut holds: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !holds().await {
        assert!(Instant::now() < deadline, "{what}: not so after {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_place_the_broker_lost_after_confirming_it_is_sent_again() {
    let mut mesh = spawn_mesh().await;
    mesh.product("mug", 700, 10).await;
    mesh.stop_checkout().await;
    assert_eq!(mesh.add("lin", "mug", 2).await.0, 200);
    let order_id = mesh.checkout("lin").await;

    // The relay's publish was confirmed and its outbox row deleted: nothing in cart-manager's outbox can send
    // the order again...
    let queue = mesh.topology.checkout_jobs();
    eventually("order.place waits on checkout-manager's queue", Duration::from_secs(10), async || {
        mesh.ready(&queue).await == 1
    })
    .await;
    eventually("cart-manager's outbox is empty", Duration::from_secs(10), async || {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox").fetch_one(&mesh.cart_db).await.unwrap() == 0
    })
    .await;
    // ...and the broker loses the message.
    assert_eq!(purge(&queue).await, 1);

    mesh.start_checkout().await;
    let order = mesh.final_order(&order_id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(mesh.count("SELECT count(*) FROM orders WHERE order_id = $1", &order_id).await, 1);
    assert_eq!(mesh.count_payments("SELECT count(*) FROM payment_charges WHERE payment_id = $1", &order_id).await, 1);
    assert_eq!(mesh.stock("mug").await, (8, 0, 8), "one reservation, committed once");
    // Once checkout-manager says it holds the order, cart-manager stops asking.
    eventually("the hand-over is settled", Duration::from_secs(20), async || {
        sqlx::query_scalar::<_, bool>("SELECT handover_due_at IS NULL FROM checkouts WHERE order_id = $1")
            .bind(&order_id)
            .fetch_one(&mesh.cart_db)
            .await
            .unwrap()
    })
    .await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_order_is_settled_without_being_sent_again() {
    let mesh = spawn_mesh().await;
    mesh.product("mug", 700, 10).await;
    assert_eq!(mesh.add("kim", "mug", 1).await.0, 200);
    let order_id = mesh.checkout("kim").await;
    assert_eq!(mesh.final_order(&order_id).await["status"], "CONFIRMED");
    eventually("the hand-over is settled", Duration::from_secs(20), async || {
        sqlx::query_scalar::<_, bool>("SELECT handover_due_at IS NULL FROM checkouts WHERE order_id = $1")
            .bind(&order_id)
            .fetch_one(&mesh.cart_db)
            .await
            .unwrap()
    })
    .await;
    mesh.wait_until_drained(&mesh.topology.checkout_jobs()).await;
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&mesh.cart_db).await.unwrap();
    assert_eq!(outbox, 0, "nothing sent again");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_stays_owed_until_the_provider_acknowledges_it() {
    // The saga gives up waiting for the charge before the provider answers: the order fails and its refund
    // is asked for; the charge then succeeds, and the provider gives it back.
    let mesh = spawn_mesh_with(Options {
        checkout: Box::new(|c| {
            c.saga.payment_timeout = Duration::from_millis(500);
            c.saga.max_payment_attempts = 1;
        }),
        payment: Box::new(|p| p.simulator.latency = Duration::from_millis(1500)),
        ..Default::default()
    })
    .await;
    mesh.product("mug", 700, 10).await;
    assert_eq!(mesh.add("sam", "mug", 1).await.0, 200);
    let order_id = mesh.checkout("sam").await;
    assert_eq!(mesh.final_order(&order_id).await["status"], "FAILED");
    eventually("the charge is given back", Duration::from_secs(20), async || {
        let outcome: Option<String> = sqlx::query_scalar("SELECT outcome FROM payment_charges WHERE payment_id = $1")
            .bind(&order_id)
            .fetch_optional(&mesh.payment_db)
            .await
            .unwrap();
        outcome.as_deref() == Some("refunded")
    })
    .await;
    eventually("the provider's acknowledgement settles every refund owed", Duration::from_secs(20), async || {
        mesh.count("SELECT count(*) FROM refunds_owed WHERE order_id = $1", &order_id).await == 0
    })
    .await;
    mesh.stop().await;
}
