//! The same job, payment request and payment result delivered twice: nothing is done twice.

use std::time::{Duration, Instant};

use ordermesh_bus::Topology;
use ordermesh_messages::{
    ClientId, Envelope, OrderId, ProductId, kinds,
    payloads::{ChargeRequest, OrderLine, PaymentOutcome, PaymentResult, PlaceOrder},
};

use crate::{SETTLE_BOUND, harness::Suite, load};

/// Runs the scenario on `suite` and records its row.
pub(crate) async fn run(suite: &mut Suite) {
    let load = suite.stream("dup").await;
    load.wait_for_orders(5).await;
    let accepted = load.stop().await;
    let _ = suite.settled(&accepted, Instant::now(), SETTLE_BOUND).await;
    let order_id = accepted.first().cloned().expect("an order to replay");
    let row: (String, i64) = sqlx::query_as("SELECT client_id, total_cents FROM orders WHERE order_id = $1")
        .bind(&order_id)
        .fetch_one(&suite.checkout_db)
        .await
        .unwrap();
    let lines: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT product_id, quantity, unit_price_cents FROM order_lines WHERE order_id = $1")
            .bind(&order_id)
            .fetch_all(&suite.checkout_db)
            .await
            .unwrap();
    let id = OrderId::parse(order_id.clone()).unwrap();
    let client = ClientId::parse(row.0).unwrap();
    let place = Envelope::new(
        kinds::ORDER_PLACE,
        &PlaceOrder {
            order_id: id.clone(),
            client_id: client.clone(),
            lines: lines
                .into_iter()
                .map(|(p, quantity, unit_price_cents)| OrderLine {
                    product_id: ProductId::parse(p).unwrap(),
                    quantity,
                    unit_price_cents,
                })
                .collect(),
            total_cents: row.1,
            created_at: chrono::Utc::now(),
            channel: ordermesh_messages::Channel::parse("phone").unwrap(),
        },
    );
    let charge = Envelope::new(
        kinds::PAYMENT_CHARGE,
        &ChargeRequest {
            payment_id: order_id.clone(),
            order_id: id.clone(),
            client_id: client,
            amount_cents: row.1,
            attempt: 1,
        },
    );
    let result = Envelope::new(
        kinds::PAYMENT_RESULT,
        &PaymentResult { payment_id: order_id.clone(), order_id: id, attempt: 1, outcome: PaymentOutcome::Succeeded },
    );
    let topology = Topology::default();
    for _ in 0..2 {
        suite.publish(&topology.checkout_jobs(), &place.to_vec()).await;
        suite.publish(&topology.payment_requests(), &charge.to_vec()).await;
        suite.publish(&topology.payment_results(), &result.to_vec()).await;
    }
    // A fresh checkout job, delivered twice.
    load::add_for(&suite.gateway, "dup-twice").await;
    let job = Envelope::new(
        kinds::CART_CHECKOUT,
        &ordermesh_messages::payloads::Checkout {
            client_id: ClientId::parse("dup-twice").unwrap(),
            idempotency_key: "request:dup".into(),
            channel: Default::default(),
        },
    );
    suite.publish(&topology.cart_jobs(), &job.to_vec()).await;
    suite.publish(&topology.cart_jobs(), &job.to_vec()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let made: Vec<String> = loop {
        let made: Vec<String> = sqlx::query_scalar("SELECT order_id FROM orders WHERE client_id = 'dup-twice'")
            .fetch_all(&suite.checkout_db)
            .await
            .unwrap();
        if !made.is_empty() || Instant::now() > deadline {
            break made;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut all = accepted.clone();
    all.extend(made.iter().cloned());
    let (mut result, recovery) = suite.check(&all, Instant::now(), SETTLE_BOUND).await;
    if made.len() != 1 {
        result = "FAIL".into();
    }
    suite.record(
        "duplicates",
        "order.place, payment.charge and payment.result of a CONFIRMED order, and a cart.checkout job, each delivered twice",
        "0".into(),
        "one order per checkout, one charge, stock committed once (audit)",
        (result, format!("{recovery}; the doubled checkout made {} order(s)", made.len())),
    );
}
