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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_checkouts_and_adds_on_one_cart_make_one_order_per_key_and_lose_no_unit() {
    let mesh = spawn_mesh_with(Options { carts: 2, gateways: 2, ..Default::default() }).await;
    mesh.product("pen", 100, 10_000).await;
    mesh.product("ink", 250, 10_000).await;

    // Copies of one checkout (one key) racing over two gateways and two cart workers: one order, named to all.
    assert_eq!(mesh.add("kim", "pen", 2).await.0, 200);
    let copies = (0..8).map(|i| {
        let mesh = &mesh;
        async move {
            let response = mesh
                .http
                .post(format!("{}/checkOutCart", mesh.gateways[i % 2]))
                .header("Idempotency-Key", "kim-1")
                .json(&json!({"clientID": "kim"}))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap())
        }
    });
    let answers = join_all(copies).await;
    let order = answers[0].1["orderID"].as_str().expect("an order id").to_owned();
    for (status, body) in &answers {
        assert_eq!((*status, body["orderID"].as_str()), (202, Some(order.as_str())), "{body}");
    }
    assert_eq!(mesh.final_order(&order).await["status"], "CONFIRMED");
    let (_, cart) = mesh.get("/cart/kim").await;
    assert_eq!(cart["items"], json!([]), "the cart was emptied once, into that order");

    // Checkouts (each its own) racing adds on one cart: every unit added ends in exactly one order or is
    // still in the cart; none is lost or ordered twice.
    let mut added = 0;
    let mut orders = Vec::new();
    for _ in 0..6 {
        let adds = (0..5).map(|i| {
            let mesh = &mesh;
            async move { mesh.add("lee", if i % 2 == 0 { "pen" } else { "ink" }, 1).await.0 }
        });
        let checkouts = (0..2).map(|g| {
            let mesh = &mesh;
            async move { mesh.post(g, "/checkOutCart", json!({"clientID": "lee"})).await }
        });
        let (adds, checkouts) = tokio::join!(join_all(adds), join_all(checkouts));
        assert!(adds.iter().all(|s| *s == 200), "{adds:?}");
        added += adds.len() as i64;
        for (status, body) in checkouts {
            match status {
                202 => orders.push(body["orderID"].as_str().unwrap().to_owned()),
                // Nothing to check out, or adds kept changing the cart under every attempt: a clear 409.
                409 => {
                    let error = body["error"].as_str().unwrap();
                    assert!(error.contains("empty") || error.contains("try again"), "{body}");
                }
                other => panic!("checkout answered {other}: {body}"),
            }
        }
    }
    let mut ordered = 0;
    for id in &orders {
        let order = mesh.final_order(id).await;
        assert_eq!(order["status"], "CONFIRMED", "{order}");
        ordered += order["items"].as_array().unwrap().iter().map(|i| i["quantity"].as_i64().unwrap()).sum::<i64>();
    }
    let (_, cart) = mesh.get("/cart/lee").await;
    let left: i64 = cart["items"].as_array().unwrap().iter().map(|i| i["quantity"].as_i64().unwrap()).sum();
    assert!(!orders.is_empty(), "no checkout went through");
    assert_eq!(ordered + left, added, "{ordered} ordered + {left} left in the cart, of {added} added");
    let sold = (10_000 - mesh.stock("pen").await.0) + (10_000 - mesh.stock("ink").await.0);
    assert_eq!(sold, ordered + 2, "stock sold is exactly what was ordered (kim's two pens included)");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_worker_that_saw_only_part_of_a_cart_checks_out_all_of_it() {
    // A cart worker prices a checkout from what its own adds left in the cart, without reading it first;
    // the write must catch a cart that holds more than that worker saw, and order the cart as it is.
    let mut mesh = spawn_mesh_with(Options { carts: 1, ..Default::default() }).await;
    mesh.product("pen", 100, 50).await;
    mesh.product("ink", 250, 50).await;
    assert_eq!(mesh.add("max", "pen", 2).await.0, 200);
    // The first worker goes; the second sees only the ink added to the cart.
    mesh.start_cart().await;
    mesh.carts.remove(0).stop().await;
    assert_eq!(mesh.add("max", "ink", 1).await.0, 200);

    let order = mesh.final_order(&mesh.checkout("max").await).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    let lines: Vec<(String, i64, i64)> = order["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let field = |k: &str| i[k].as_i64().unwrap();
            (i["productID"].as_str().unwrap().to_owned(), field("quantity"), field("unitPriceCents"))
        })
        .collect();
    assert_eq!(lines, [("ink".to_owned(), 1, 250), ("pen".to_owned(), 2, 100)], "{order}");
    assert_eq!(order["totalCents"], 450);
    assert_eq!(mesh.get("/cart/max").await.1["items"], json!([]), "the whole cart became the order");
    assert_eq!(mesh.stock("pen").await.0, 48);
    assert_eq!(mesh.stock("ink").await.0, 49);

    // The same worker's next checkout, of a cart it saw whole, orders exactly that.
    assert_eq!(mesh.add("max", "pen", 1).await.0, 200);
    let order = mesh.final_order(&mesh.checkout("max").await).await;
    assert_eq!((order["items"].as_array().unwrap().len(), &order["totalCents"]), (1, &json!(100)), "{order}");
    mesh.stop().await;
}
