//! Many shoppers at once, across several gateways and cart workers.

use futures::future::join_all;
use serde_json::json;

use crate::helpers::{Options, spawn_mesh_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_and_two_cart_workers_serve_side_by_side() {
    let mesh = spawn_mesh_with(Options { carts: 2, gateways: 2, ..Default::default() }).await;
    mesh.product("sticker", 100, 1000).await;
    let adds = (0..40).map(|i| {
        let mesh = &mesh;
        async move {
            mesh.post(i % 2, "/addToCart", json!({"clientID": format!("c{i}"), "productID": "sticker", "quantity": 2}))
                .await
        }
    });
    for (status, body) in join_all(adds).await {
        assert_eq!(status, 200, "{body}");
    }
    let checkouts = (0..40).map(|i| {
        let mesh = &mesh;
        async move { mesh.post(i % 2, "/checkOutCart", json!({"clientID": format!("c{i}")})).await }
    });
    let orders: Vec<String> = join_all(checkouts)
        .await
        .into_iter()
        .map(|(status, body)| {
            assert_eq!(status, 202, "{body}");
            body["orderID"].as_str().unwrap().to_owned()
        })
        .collect();
    for id in &orders {
        assert_eq!(mesh.final_order(id).await["status"], "CONFIRMED");
    }
    assert_eq!(mesh.stock("sticker").await, (1000 - 80, 0, 1000 - 80));
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_checkouts_of_a_scarce_product_confirm_exactly_the_stock() {
    const UNITS: i64 = 5;
    const SHOPPERS: usize = 25;
    let mesh = spawn_mesh_with(Options { carts: 2, ..Default::default() }).await;
    mesh.product("poster", 899, UNITS).await;
    for i in 0..SHOPPERS {
        // Each cart alone fits in the stock; together they do not.
        assert_eq!(mesh.add(&format!("s{i}"), "poster", 1).await.0, 200);
    }
    let checkouts = (0..SHOPPERS).map(|i| {
        let mesh = &mesh;
        async move { mesh.checkout(&format!("s{i}")).await }
    });
    let orders = join_all(checkouts).await;
    let mut confirmed = 0;
    let mut rejected = 0;
    for id in &orders {
        match mesh.final_order(id).await["status"].as_str().unwrap() {
            "CONFIRMED" => confirmed += 1,
            "REJECTED" => rejected += 1,
            other => panic!("unexpected final status {other}"),
        }
    }
    assert_eq!(confirmed, UNITS, "exactly as many confirmed as units");
    assert_eq!(rejected, SHOPPERS as i64 - UNITS);
    assert_eq!(mesh.stock("poster").await, (0, 0, 0), "sold out, nothing left held, never negative");
    mesh.stop().await;
}
