//! The shop's API and the services' databases as a test asks them.

use super::*;

impl TestMesh {
    /// Creates a product with `on_hand` units at `price_cents`.
    pub async fn product(&self, id: &str, price_cents: i64, on_hand: i64) {
        self.inventory
            .clone()
            .upsert_product(pb::UpsertProductRequest {
                product_id: id.into(),
                name: format!("Product {id}"),
                price_cents,
                on_hand,
            })
            .await
            .expect("product upserted");
    }

    /// `(on_hand, reserved, available)` of a product.
    pub async fn stock(&self, id: &str) -> (i64, i64, i64) {
        let q = self
            .inventory
            .clone()
            .get_available_quantity(pb::GetAvailableQuantityRequest { product_id: id.into() })
            .await
            .expect("stock readable")
            .into_inner();
        assert_eq!(q.available, q.on_hand - q.reserved);
        assert!(q.reserved >= 0 && q.reserved <= q.on_hand, "{q:?}");
        (q.on_hand, q.reserved, q.available)
    }

    /// POSTs JSON to a gateway path; returns status and body.
    pub async fn post(&self, gateway: usize, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.gateways[gateway]))
            .json(&body)
            .send()
            .await
            .expect("gateway answers");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    /// GETs a path; returns status and body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.expect("gateway answers");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    /// `POST /addToCart`.
    pub async fn add(&self, client: &str, product: &str, quantity: i64) -> (u16, Value) {
        self.post(0, "/addToCart", json!({"clientID": client, "productID": product, "quantity": quantity})).await
    }

    /// `POST /checkOutCart`, expecting 202; returns the order id.
    pub async fn checkout(&self, client: &str) -> String {
        let (status, body) = self.post(0, "/checkOutCart", json!({"clientID": client})).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "accepted");
        body["orderID"].as_str().expect("orderID").to_owned()
    }

    /// Waits (up to 30 s) for the order to be final and returns it.
    pub async fn final_order(&self, order_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.get(&format!("/orders/{order_id}?waitSeconds=10")).await;
            assert_eq!(status, 200, "{body}");
            let s = body["status"].as_str().unwrap_or_default();
            if ["CONFIRMED", "REJECTED", "PAYMENT_DECLINED", "FAILED"].contains(&s) {
                return body;
            }
            assert!(tokio::time::Instant::now() < deadline, "order {order_id} not final after 30 s: {body}");
        }
    }

    /// `service`'s metrics once `holds` is true of them, or as they are after 15 s.
    pub async fn scrape_until(&self, service: &str, holds: impl Fn(&str) -> bool) -> String {
        let url = &self.metrics.iter().find(|(s, _)| *s == service).unwrap().1;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.http.get(url).send().await.unwrap().text().await.unwrap();
            if holds(&text) || tokio::time::Instant::now() >= deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A count from the checkout database (orders, order_steps) for one id.
    pub async fn count(&self, sql: &'static str, id: &str) -> i64 {
        sqlx::query_scalar(sql).bind(id).fetch_one(&self.checkout_db).await.expect(sql)
    }

    /// A count from payment-gateway's database (payment_charges) for one id.
    pub async fn count_payments(&self, sql: &'static str, id: &str) -> i64 {
        sqlx::query_scalar(sql).bind(id).fetch_one(&self.payment_db).await.expect(sql)
    }
}
