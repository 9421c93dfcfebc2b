//! Overload: beyond its admission limit the gateway refuses at once with 503 and `Retry-After`, and
//! admits again as soon as a slot is free.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Options, TestMesh, spawn_mesh_with};

/// Adds a kettle to `client`'s cart, expecting it refused at once: 503, `Retry-After: 1`, the busy sentence.
async fn add_refused_at_once(mesh: &TestMesh, client: &str) {
    let started = Instant::now();
    let response = mesh
        .http
        .post(mesh.url("/addToCart"))
        .json(&json!({"clientID": client, "productID": "kettle", "quantity": 1}))
        .send()
        .await
        .expect("gateway answers");
    let took = started.elapsed();
    assert_eq!(response.status(), 503);
    assert!(took < Duration::from_millis(500), "a refused add took {took:?}");
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "failure");
    assert!(body["error"].as_str().unwrap().contains("busy"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_its_limit_the_gateway_sheds_at_once_and_admits_again_when_a_slot_frees() {
    // No cart worker: every add is held until its 3 s deadline, so two of them fill the limit.
    let mut mesh = spawn_mesh_with(Options {
        carts: 0,
        request_timeout: Duration::from_secs(3),
        gateway_max_in_flight: Some(2),
        ..Default::default()
    })
    .await;
    mesh.product("kettle", 2_500, 10).await;
    let held: Vec<_> = (0..2)
        .map(|i| {
            let http = mesh.http.clone();
            let url = mesh.url("/addToCart");
            tokio::spawn(async move {
                let body = json!({"clientID": format!("held{i}"), "productID": "kettle", "quantity": 1});
                http.post(url).json(&body).send().await.expect("gateway answers").status().as_u16()
            })
        })
        .collect();

    // Both are in flight once their jobs wait on the cart queue (nobody consumes it).
    let deadline = Instant::now() + Duration::from_secs(2);
    while mesh.ready(&mesh.topology.cart_jobs()).await < 2 {
        assert!(Instant::now() < deadline, "the held adds never reached the broker");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Now the next add is refused without waiting for anything.
    add_refused_at_once(&mesh, "extra").await;

    // Checkout shares the limit; health and documentation do not.
    let (status, _) = mesh.post(0, "/checkOutCart", json!({"clientID": "extra"})).await;
    assert_eq!(status, 503);
    assert_eq!(mesh.get("/healthz").await.0, 200);

    for h in held {
        assert_eq!(h.await.unwrap(), 504, "a held add ends at its deadline");
    }
    // The slots are free again: with a worker back, the same request goes through.
    mesh.start_cart().await;
    let (status, body) = mesh.add("extra", "kettle", 1).await;
    assert_eq!(status, 200, "{body}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_its_orders_are_unfinished_the_gateway_refuses_adds_but_not_checkouts() {
    // Payments take 3 s, so the orders below stay open while the test looks.
    let mesh = spawn_mesh_with(Options {
        gateway_max_open_orders: Some(2),
        payment: Box::new(|p| p.simulator.latency = Duration::from_secs(3)),
        ..Default::default()
    })
    .await;
    mesh.product("kettle", 2_500, 10).await;
    // A cart filled before the door closes.
    assert_eq!(mesh.add("bea", "kettle", 1).await.0, 200);
    let mut orders = Vec::new();
    for client in ["ann", "al"] {
        assert_eq!(mesh.add(client, "kettle", 1).await.0, 200);
        orders.push(mesh.checkout(client).await);
    }

    // Two orders open: a new shopper's add is refused at once and adds nothing.
    add_refused_at_once(&mesh, "cy").await;
    let (status, cart) = mesh.get("/cart/cy").await;
    assert_eq!((status, cart["items"].as_array().map(Vec::len)), (200, Some(0)), "{cart}");

    // A filled cart still checks out: it is the work closest to done.
    orders.push(mesh.checkout("bea").await);
    let (status, text) = {
        let response = mesh.http.get(mesh.url("/metrics")).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    assert_eq!(status, 200);
    assert_eq!(
        crate::metrics::value(&text, "gateway_open_orders", &[("service", "api-gateway")]),
        Some(3.0),
        "three orders accepted, none final yet"
    );

    // Once they end, shoppers are let in again.
    for order in &orders {
        assert_eq!(mesh.final_order(order).await["status"], "CONFIRMED");
    }
    let (status, body) = mesh.add("cy", "kettle", 1).await;
    assert_eq!(status, 200, "{body}");
    mesh.stop().await;
}
