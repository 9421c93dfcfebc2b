//! The holes the fault probe found, each closed: a retried add applies once, a request whose deadline
//! passed is neither applied nor dead-lettered, and a broker restart costs well under a second.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    faults::BrokerLink,
    helpers::{Options, spawn_mesh, spawn_mesh_with},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_add_with_the_same_key_is_applied_once_and_another_body_under_it_is_refused() {
    let mesh = spawn_mesh().await;
    mesh.product("mug", 100, 50).await;
    let add = |key: &'static str, quantity: i64| {
        mesh.http
            .post(mesh.url("/addToCart"))
            .header("Idempotency-Key", key)
            .json(&json!({"clientID": "erin", "productID": "mug", "quantity": quantity}))
            .send()
    };
    for _ in 0..3 {
        let r = add("erin-add-1", 1).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "a retry gets the first answer");
    }
    let cart = mesh.get("/cart/erin").await.1;
    assert_eq!(cart["items"][0]["quantity"], 1, "three sends, one unit: {cart}");

    let r = add("erin-add-1", 2).await.unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "failure");
    assert!(body["error"].as_str().unwrap().contains("Idempotency-Key"), "{body}");

    // Keys are per client: bob may use erin's key.
    let r = mesh
        .http
        .post(mesh.url("/addToCart"))
        .header("Idempotency-Key", "erin-add-1")
        .json(&json!({"clientID": "bob", "productID": "mug", "quantity": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // A retried removal answers as the first did (not 404), and removes nothing else.
    let remove = || mesh.http.delete(mesh.url("/cart/erin/items/mug")).header("Idempotency-Key", "erin-rm-1").send();
    assert_eq!(remove().await.unwrap().status().as_u16(), 200);
    assert_eq!(remove().await.unwrap().status().as_u16(), 200);
    assert_eq!(mesh.get("/cart/erin").await.1["items"], json!([]));
    let without_key = mesh.http.delete(mesh.url("/cart/erin/items/mug")).send().await.unwrap();
    assert_eq!(without_key.status().as_u16(), 404, "without a key a second removal finds nothing");

    let r = mesh.http.post(mesh.url("/addToCart")).header("Idempotency-Key", "").json(&json!({})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400, "an empty key is refused");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_copies_of_one_add_apply_once_and_a_replay_answers_even_when_the_product_is_gone() {
    let mut options = Options { carts: 2, ..Options::default() };
    options.request_timeout = Duration::from_secs(10);
    let mesh = spawn_mesh_with(options).await;
    mesh.product("vase", 300, 50).await;
    let add = || {
        mesh.http
            .post(mesh.url("/addToCart"))
            .header("Idempotency-Key", "fay-add-1")
            .json(&json!({"clientID": "fay", "productID": "vase", "quantity": 3}))
            .send()
    };
    // Sent at once to two cart workers: the copies race for the same key.
    let answers = futures::future::join_all((0..12).map(|_| add())).await;
    for r in answers {
        assert_eq!(r.unwrap().status().as_u16(), 200, "every copy gets the first answer");
    }
    let cart = mesh.get("/cart/fay").await.1;
    assert_eq!(cart["items"][0]["quantity"], 3, "twelve copies, one add: {cart}");

    // The product disappears from the catalogue's view (no stock left): a retry still gets the first answer.
    mesh.product("vase", 300, 0).await;
    assert_eq!(add().await.unwrap().status().as_u16(), 200, "the replay answers as the first time did");
    let (status, body) = mesh.add("fay", "vase", 1).await;
    assert_eq!(status, 409, "a new add is refused: {body}");
    assert!(body["error"].as_str().unwrap().contains('3'), "the refusal says what the cart holds: {body}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_whose_deadline_passed_in_the_queue_is_never_applied_nor_dead_lettered() {
    // No cart worker yet: the add waits in the queue past the gateway's deadline.
    let mut mesh =
        spawn_mesh_with(Options { carts: 0, request_timeout: Duration::from_secs(1), ..Default::default() }).await;
    mesh.product("mug", 100, 50).await;
    let late = mesh
        .http
        .post(mesh.url("/addToCart"))
        .header("Idempotency-Key", "gil-1")
        .json(&json!({"clientID": "gil", "productID": "mug", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status().as_u16(), 504);
    let body: serde_json::Value = late.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Idempotency-Key"), "504 says how to retry: {body}");

    // The worker comes back: it must drop the expired add, not apply it and not dead-letter it.
    mesh.start_cart().await;
    mesh.wait_until_drained(&mesh.topology.cart_jobs()).await;
    assert_eq!(mesh.get("/cart/gil").await.1["items"], json!([]), "the expired add was applied");
    let dlq = ordermesh_bus::Topology::dead_letter_queue(&mesh.topology.cart_jobs());
    assert_eq!(mesh.ready(&dlq).await, 0, "an expired request is not for an operator");

    // The client's retry with the same key is safe, and applies once.
    let retry = mesh
        .http
        .post(mesh.url("/addToCart"))
        .header("Idempotency-Key", "gil-1")
        .json(&json!({"clientID": "gil", "productID": "mug", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status().as_u16(), 200);
    assert_eq!(mesh.get("/cart/gil").await.1["items"][0]["quantity"], 1);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_broker_outage_the_first_checkout_goes_through_within_a_second_of_it_returning() {
    let mut link = BrokerLink::new();
    link.up().await;
    let mesh = spawn_mesh_with(Options {
        amqp_url: Some(format!("amqp://guest:guest@127.0.0.1:{}/%2f", link.port)),
        ..Default::default()
    })
    .await;
    mesh.wait_until_consuming().await;
    mesh.product("mug", 100, 50).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while mesh.add("hal", "mug", 1).await.0 != 200 {
        assert!(Instant::now() < deadline, "the mesh never came up through the link");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    link.down();
    // Long enough for every service to notice and back off as far as it goes.
    let outage = Instant::now() + Duration::from_secs(3);
    while Instant::now() < outage {
        assert_ne!(mesh.add("hal", "mug", 1).await.0, 200, "served with the broker gone");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    link.up().await;
    let back = Instant::now();
    let order_id = loop {
        let (add, _) = mesh.add("hal", "mug", 1).await;
        if add == 200 {
            let (status, body) = mesh.post(0, "/checkOutCart", json!({"clientID": "hal"})).await;
            if status == 202 {
                break body["orderID"].as_str().unwrap().to_owned();
            }
        }
        assert!(back.elapsed() < Duration::from_secs(10), "no checkout 10 s after the broker returned");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let recovered = back.elapsed();
    assert!(recovered < Duration::from_secs(1), "first checkout {recovered:?} after the broker returned");
    assert_eq!(mesh.final_order(&order_id).await["status"], "CONFIRMED");
    link.down();
    mesh.stop().await;
}
