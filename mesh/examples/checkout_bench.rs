//! Load benchmark: shoppers each add one item and check out through the HTTP gateway; it reports the
//! rate of accepted checkouts, latencies, and how long until every order is CONFIRMED.
//!
//! Start the mesh first (`cargo run --release`), then:
//! `cargo run --release -p ordermesh --example checkout_bench -- [orders=2000] [concurrency=64]`
//! (`GATEWAY_URL` and `INVENTORY_URL` point elsewhere). Only loopback addresses are meant here.

// The report on stdout is this tool's whole output.
#![allow(clippy::print_stdout)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use ordermesh_proto::inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient};
use serde_json::{Value, json};

/// Products the load is spread over (one hot row would measure lock queueing, not the mesh).
const PRODUCTS: usize = 50;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let orders: usize = args.next().map_or(Ok(2000), |a| a.parse())?;
    let concurrency: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let gateway = std::env::var("GATEWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:5003".into());
    let inventory_url = std::env::var("INVENTORY_URL").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();

    let mut inventory = InventoryServiceClient::connect(inventory_url).await?;
    let per_product = i64::try_from(orders / PRODUCTS + 1)?;
    for p in 0..PRODUCTS {
        inventory
            .upsert_product(pb::UpsertProductRequest {
                product_id: format!("bench-{run}-{p}"),
                name: format!("Bench product {p}"),
                price_cents: 100,
                on_hand: per_product,
            })
            .await?;
    }

    let http =
        reqwest::Client::builder().pool_max_idle_per_host(concurrency).timeout(Duration::from_secs(30)).build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, next, gateway) = (http.clone(), next.clone(), gateway.clone());
            tokio::spawn(async move {
                let mut add_ms = Vec::new();
                let mut checkout_ms = Vec::new();
                let mut failures = 0usize;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= orders {
                        break;
                    }
                    let client = format!("bench-{run}-c{i}");
                    let body = json!({"clientID": client, "productID": format!("bench-{run}-{}", i % PRODUCTS), "quantity": 1});
                    let t = Instant::now();
                    let added = http.post(format!("{gateway}/addToCart")).json(&body).send().await;
                    add_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                    if !added.is_ok_and(|r| r.status() == 200) {
                        failures += 1;
                        continue;
                    }
                    let t = Instant::now();
                    let checked = http.post(format!("{gateway}/checkOutCart")).json(&json!({"clientID": client})).send().await;
                    checkout_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                    if !checked.is_ok_and(|r| r.status() == 202) {
                        failures += 1;
                    }
                }
                (add_ms, checkout_ms, failures)
            })
        })
        .collect();
    let (mut add_ms, mut checkout_ms, mut failures) = (Vec::new(), Vec::new(), 0);
    for w in workers {
        let (a, c, f) = w.await?;
        add_ms.extend(a);
        checkout_ms.extend(c);
        failures += f;
    }
    let accepted_in = started.elapsed();

    // Done when every unit is sold: on_hand dropped by one per order and nothing is still held.
    let expected_left = per_product * i64::try_from(PRODUCTS)? - i64::try_from(orders)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut left = 0;
        let mut held = 0;
        for p in 0..PRODUCTS {
            let q = inventory
                .get_available_quantity(pb::GetAvailableQuantityRequest { product_id: format!("bench-{run}-{p}") })
                .await?
                .into_inner();
            left += q.on_hand;
            held += q.reserved;
        }
        if (left == expected_left && held == 0) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let confirmed_in = started.elapsed();

    // Spot-check statuses through the gateway.
    let mut confirmed = 0;
    for i in (0..orders).step_by((orders / 20).max(1)) {
        let cart: Value = http.get(format!("{gateway}/cart/bench-{run}-c{i}")).send().await?.json().await?;
        if cart["items"].as_array().is_some_and(Vec::is_empty) {
            confirmed += 1;
        }
    }

    add_ms.sort_by(f64::total_cmp);
    checkout_ms.sort_by(f64::total_cmp);
    let pct = |v: &[f64], p: f64| v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
    println!("orders {orders}, concurrency {concurrency}, failures {failures}");
    println!(
        "add+checkout phase: {:.2} s -> {:.0} checkouts accepted/s ({:.0} HTTP requests/s)",
        accepted_in.as_secs_f64(),
        orders as f64 / accepted_in.as_secs_f64(),
        2.0 * orders as f64 / accepted_in.as_secs_f64()
    );
    println!(
        "addToCart   latency ms: p50 {:.1}  p95 {:.1}  p99 {:.1}",
        pct(&add_ms, 0.5),
        pct(&add_ms, 0.95),
        pct(&add_ms, 0.99)
    );
    println!(
        "checkOutCart latency ms: p50 {:.1}  p95 {:.1}  p99 {:.1}",
        pct(&checkout_ms, 0.5),
        pct(&checkout_ms, 0.95),
        pct(&checkout_ms, 0.99)
    );
    println!(
        "all orders sold and settled after {:.2} s -> {:.0} orders/s end to end; carts emptied in sample: {confirmed}",
        confirmed_in.as_secs_f64(),
        orders as f64 / confirmed_in.as_secs_f64()
    );
    Ok(())
}
