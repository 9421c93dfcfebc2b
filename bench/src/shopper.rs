//! One simulated customer: adds each line of its cart, checks out, and waits for the final status,
//! retrying nothing (a failure is what the report counts), with idempotency keys as a real client sends.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{Catalogue, options::Scenario};

/// What became of one shopper.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Each add's latency (the first one from the shopper's scheduled start).
    pub adds: Vec<Duration>,
    /// The checkout's latency, if it was accepted (202).
    pub checkout: Option<Duration>,
    /// From the 202 to the final status, if it was seen.
    pub to_final: Option<Duration>,
    /// `CONFIRMED`, `REJECTED`, …, or `SOLD_OUT_AT_ADD` (the cart refused more than is available).
    pub status: Option<String>,
    /// What went wrong, by kind (`add 503`, `checkout 504`, `final status not seen`, …).
    pub error: Option<String>,
    /// How long the gateway took to refuse a request with 503 (shed), measured from the request's own send.
    pub shed: Option<Duration>,
    /// Units in the order.
    pub units: i64,
}

/// A customer of the run.
#[derive(Debug, Clone)]
pub struct Shopper {
    pub http: reqwest::Client,
    pub gateway: String,
    pub client: String,
    pub scenario: Scenario,
    pub catalogue: Arc<Catalogue>,
    pub n: u64,
    pub final_wait: Duration,
}

impl Shopper {
    fn lines(&self) -> Vec<(String, i64)> {
        let products = &self.catalogue.products;
        match self.scenario {
            Scenario::Hot => vec![(products[0].0.clone(), 1)],
            Scenario::Spread => vec![(products[(self.n as usize) % products.len()].0.clone(), 1)],
            Scenario::Mixed => {
                let spread = products.len() - 1; // the last one is the luxury product
                let mut lines: Vec<(String, i64)> = (0..1 + self.n % 3)
                    .map(|j| {
                        let i = ((self.n * 7 + j * 13) as usize) % spread;
                        (products[i].0.clone(), 1 + ((self.n + j) % 2) as i64)
                    })
                    .collect();
                lines.sort();
                lines.dedup_by(|a, b| a.0 == b.0);
                if self.n.is_multiple_of(10)
                    && let Some(lux) = &self.catalogue.special
                {
                    lines.push((lux.clone(), 1));
                }
                lines
            }
        }
    }

    /// The answer and how long it took from this request's send.
    async fn post_timed(&self, path: &str, key: &str, body: Value) -> Result<(u16, Value, Duration), String> {
        let sent = Instant::now();
        let response = self
            .http
            .post(format!("{}{path}", self.gateway))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .map_err(|e| if e.is_timeout() { "timeout".to_owned() } else { "connection".to_owned() })?;
        let status = response.status().as_u16();
        let took = sent.elapsed();
        Ok((status, response.json().await.unwrap_or(Value::Null), took))
    }

    /// Shops once; `scheduled` is when this shopper was due (open loop) or started (closed loop).
    pub async fn shop(&self, scheduled: Instant) -> Outcome {
        let mut outcome = Outcome::default();
        let lines = self.lines();
        outcome.units = lines.iter().map(|l| l.1).sum();
        let mut since = scheduled;
        for (i, (product, quantity)) in lines.iter().enumerate() {
            let body = json!({"clientID": self.client, "productID": product, "quantity": quantity});
            match self.post_timed("/addToCart", &format!("add-{}-{i}", self.client), body).await {
                Ok((503, _, took)) => {
                    outcome.shed = Some(took);
                    return self.failed(outcome, "add 503".into());
                }
                Ok((200, _, _)) => {
                    outcome.adds.push(since.elapsed());
                    since = Instant::now();
                }
                Ok((409, _, _)) if self.scenario == Scenario::Hot => {
                    outcome.adds.push(since.elapsed());
                    outcome.status = Some("SOLD_OUT_AT_ADD".into());
                    return outcome;
                }
                Ok((status, _, _)) => return self.failed(outcome, format!("add {status}")),
                Err(kind) => return self.failed(outcome, format!("add {kind}")),
            }
        }
        let key = format!("co-{}", self.client);
        let order_id = match self.post_timed("/checkOutCart", &key, json!({"clientID": self.client})).await {
            Ok((202, body, _)) => match body["orderID"].as_str() {
                Some(id) => id.to_owned(),
                None => return self.failed(outcome, "checkout 202 without an orderID".into()),
            },
            Ok((503, _, took)) => {
                outcome.shed = Some(took);
                return self.failed(outcome, "checkout 503".into());
            }
            Ok((status, _, _)) => return self.failed(outcome, format!("checkout {status}")),
            Err(kind) => return self.failed(outcome, format!("checkout {kind}")),
        };
        outcome.checkout = Some(since.elapsed());
        let accepted = Instant::now();
        while accepted.elapsed() < self.final_wait {
            let url = format!("{}/orders/{order_id}?waitSeconds=10", self.gateway);
            let Ok(response) = self.http.get(&url).send().await else { continue };
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if let Some(status) = body["status"].as_str()
                && ["CONFIRMED", "REJECTED", "PAYMENT_DECLINED", "FAILED"].contains(&status)
            {
                outcome.to_final = Some(accepted.elapsed());
                outcome.status = Some(status.to_owned());
                return outcome;
            }
        }
        self.failed(outcome, "final status not seen".into())
    }

    fn failed(&self, mut outcome: Outcome, kind: String) -> Outcome {
        outcome.error = Some(kind);
        outcome
    }
}
