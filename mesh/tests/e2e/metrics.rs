//! Every service serves Prometheus metrics, and one checkout moves the counters it should in each of them.

use crate::helpers::spawn_mesh;

/// The value of the series `name` whose labels include every `(key, value)` of `labels`; the sum when
/// several match.
pub(crate) fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (label_text, number) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some(parts) => parts,
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(n) => ("", n),
                None => continue, // another metric whose name starts with `name`
            },
        };
        if labels.iter().all(|(k, v)| label_text.split(',').any(|pair| pair == format!("{k}=\"{v}\""))) {
            let n: f64 = number.trim().parse().unwrap_or_else(|_| panic!("a number in {line:?}"));
            *found.get_or_insert(0.0) += n;
        }
    }
    found
}

fn at_least(text: &str, service: &str, name: &str, labels: &[(&str, &str)], min: f64) {
    let got = value(text, name, labels);
    assert!(got.is_some_and(|v| v >= min), "{service}: {name}{labels:?} is {got:?}, expected at least {min}\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_serves_metrics_that_one_checkout_moves() {
    let mesh = spawn_mesh().await;
    mesh.product("lamp", 4200, 3).await;
    assert_eq!(mesh.add("carol", "lamp", 2).await.0, 200);
    let order_id = mesh.checkout("carol").await;
    assert_eq!(mesh.final_order(&order_id).await["status"], "CONFIRMED");
    let (missing, _) = mesh.get("/no/such/route").await;
    assert_eq!(missing, 404);

    let gateway = mesh.http.get(mesh.url("/metrics")).send().await.unwrap();
    assert_eq!(gateway.status().as_u16(), 200);
    assert!(gateway.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = gateway.text().await.unwrap();
    let g = "api-gateway";
    at_least(&text, g, "http_requests_total", &[("route", "/addToCart"), ("method", "POST"), ("status", "200")], 1.0);
    at_least(&text, g, "http_requests_total", &[("route", "/checkOutCart"), ("status", "202")], 1.0);
    at_least(&text, g, "http_requests_total", &[("route", "/orders/{orderID}"), ("status", "200")], 1.0);
    at_least(&text, g, "http_requests_total", &[("route", "unmatched"), ("status", "404")], 1.0);
    at_least(&text, g, "http_request_duration_seconds_count", &[("route", "/addToCart")], 1.0);
    let cart_jobs = mesh.topology.cart_jobs();
    at_least(&text, g, "amqp_messages_published_total", &[("queue", &cart_jobs), ("kind", "cart.add_item")], 1.0);
    assert!(!text.contains(&order_id), "no series per order id");

    // The workers' own endpoints; sampled gauges are read at scrape time.
    let mut scraped = std::collections::HashMap::new();
    for (service, url) in &mesh.metrics {
        let response = mesh.http.get(url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{service} {url}");
        scraped.insert(*service, response.text().await.unwrap());
        let health = mesh.http.get(url.replace("/metrics", "/healthz")).send().await.unwrap();
        assert_eq!(health.status().as_u16(), 200, "{service} is healthy");
    }

    let c = "cart-manager";
    let text = &scraped[c];
    at_least(text, c, "amqp_messages_consumed_total", &[("queue", &cart_jobs), ("kind", "cart.checkout")], 1.0);
    at_least(text, c, "grpc_client_handled_total", &[("method", "InventoryService/GetProduct"), ("code", "OK")], 1.0);
    at_least(text, c, "grpc_client_handling_seconds_count", &[("method", "InventoryService/GetProduct")], 1.0);
    at_least(text, c, "amqp_messages_published_total", &[("kind", "order.place")], 1.0);
    at_least(text, c, "db_pool_connections", &[("pool", "cart"), ("state", "max")], 8.0);
    assert_eq!(value(text, "outbox_backlog", &[("service", c)]), Some(0.0), "the checkout was relayed");

    let k = "checkout-manager";
    let text = &scraped[k];
    for step in ["reserve", "payment", "commit"] {
        at_least(text, k, "saga_steps_total", &[("step", step), ("outcome", "ok")], 1.0);
        at_least(text, k, "saga_step_duration_seconds_count", &[("step", step), ("outcome", "ok")], 1.0);
    }
    at_least(text, k, "orders_final_total", &[("state", "CONFIRMED")], 1.0);
    at_least(text, k, "grpc_client_handled_total", &[("method", "InventoryService/Reserve"), ("code", "OK")], 1.0);
    at_least(text, k, "amqp_messages_consumed_total", &[("kind", "payment.result")], 1.0);

    let i = "inventory-manager";
    let text = &scraped[i];
    at_least(text, i, "grpc_server_handled_total", &[("method", "InventoryService/Reserve"), ("code", "OK")], 1.0);
    at_least(text, i, "grpc_server_handled_total", &[("method", "InventoryService/CommitReservation")], 1.0);
    at_least(text, i, "reservations_total", &[("state", "held")], 1.0);
    at_least(text, i, "reservations_total", &[("state", "committed")], 1.0);
    assert_eq!(value(text, "reservations_held", &[("service", i)]), Some(0.0), "nothing is left held");

    let p = "payment-gateway";
    let text = &scraped[p];
    at_least(text, p, "amqp_messages_consumed_total", &[("kind", "payment.charge")], 1.0);
    // A publish is counted once its confirm is back, and the broker may deliver the result (and the order
    // reach CONFIRMED) before it confirms a persistent message: wait for the count rather than race it.
    let text = mesh
        .scrape_until(p, |text| {
            value(text, "amqp_messages_published_total", &[("kind", "payment.result")]).is_some_and(|v| v >= 1.0)
        })
        .await;
    at_least(&text, p, "amqp_messages_published_total", &[("kind", "payment.result")], 1.0);

    // What the containers' health checks run: `ordermesh probe` on gRPC health and on a worker's /healthz.
    let inventory_addr = mesh.inventory_url.trim_start_matches("http://");
    ordermesh_ops::probe::probe(&format!("grpc://{inventory_addr}")).await.expect("inventory is SERVING");
    let cart_health = mesh.metrics.iter().find(|(s, _)| *s == c).unwrap().1.replace("/metrics", "/healthz");
    ordermesh_ops::probe::probe(&cart_health).await.expect("cart-manager is healthy");

    // A NOT_FOUND from inventory is counted under its code.
    let (status, _) = mesh.add("carol", "no-such-product", 1).await;
    assert_eq!(status, 404);
    let labels = [("method", "InventoryService/GetProduct"), ("code", "NOT_FOUND")];
    let text =
        mesh.scrape_until(i, |text| value(text, "grpc_server_handled_total", &labels).is_some_and(|v| v >= 1.0)).await;
    at_least(&text, i, "grpc_server_handled_total", &labels, 1.0);
    mesh.stop().await;
}
