//! A steady stream of shoppers over the public HTTP API, as clients that retry the way the README says:
//! the same `Idempotency-Key` on a 5xx or a broken connection. Every tenth shopper buys the scarce
//! product (some are REJECTED), every tenth the luxury one (more than a shopper's balance: declined).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ordermesh_nemesis::deployment::{CATALOGUE, SCARCE_UNITS};
use ordermesh_proto::inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient};
use serde_json::{Value, json};
use tokio::sync::watch;

const SHOPPERS: usize = 3;
/// Shoppers who each put 2 scarce units in their cart at the start of a stream, before any is reserved
/// (the cart checks availability, not holds): 3 win the 6 units, 2 are REJECTED.
const RACERS: usize = 5;

/// Loads the catalogue (at the start, with no traffic).
pub async fn seed(inventory_url: &str) {
    let mut client = InventoryServiceClient::connect(inventory_url.to_owned()).await.expect("inventory reachable");
    for (id, price_cents, on_hand) in CATALOGUE {
        let request = pb::UpsertProductRequest {
            product_id: (*id).into(),
            name: format!("Product {id}"),
            price_cents: *price_cents,
            on_hand: *on_hand,
        };
        client.upsert_product(request).await.expect("product upserted");
    }
}

/// A running stream of shoppers.
pub struct Load {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    accepted: Arc<Mutex<Vec<(String, Instant)>>>,
    /// The clients whose add was answered 200: each add is acknowledged, so it must never be lost.
    added: Arc<Mutex<Vec<String>>>,
}

impl Load {
    /// Starts the shoppers of one scenario (`tag` keeps client ids apart between scenarios) on `gateways`:
    /// shopper n starts at gateway n and moves to the next when one does not answer, as a load balancer would.
    pub fn start(gateways: &[String], tag: &str) -> Self {
        let (stop, stopped) = watch::channel(false);
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let added = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..SHOPPERS)
            .map(|n| {
                let gateways = Gateways { urls: gateways.to_vec(), at: n };
                let tag = tag.to_owned();
                let (accepted, added) = (accepted.clone(), added.clone());
                let stopped = stopped.clone();
                tokio::spawn(async move { shopper(gateways, format!("{tag}-{n}"), accepted, added, stopped).await })
            })
            .collect();
        Self { stop, tasks, accepted, added }
    }

    /// Waits until `n` checkouts were accepted (the stream is flowing).
    pub async fn wait_for_orders(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.accepted.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "fewer than {n} checkouts accepted within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How long after `since` the first checkout was accepted, if one was within `patience`.
    pub async fn next_checkout_after(&self, since: Instant, patience: Duration) -> Option<Duration> {
        loop {
            if let Some(at) = self.accepted.lock().unwrap().iter().map(|a| a.1).filter(|t| *t >= since).min() {
                return Some(at - since);
            }
            if since.elapsed() > patience {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The clients whose add was answered 200 so far.
    pub fn acknowledged_adds(&self) -> Vec<String> {
        self.added.lock().unwrap().clone()
    }

    /// Stops the shoppers (each finishes its current checkout) and returns every accepted order id.
    pub async fn stop(self) -> Vec<String> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let accepted = self.accepted.lock().unwrap();
        accepted.iter().map(|a| a.0.clone()).collect()
    }
}

/// The gateways a shopper may use, and the one it uses now.
struct Gateways {
    urls: Vec<String>,
    at: usize,
}

impl Gateways {
    fn one(url: &str) -> Self {
        Self { urls: vec![url.to_owned()], at: 0 }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.urls[self.at % self.urls.len()])
    }
}

/// Sends `body` to `path` with `key`, again on a 5xx or a broken connection (up to ~10 s), as the
/// README tells clients to, moving to the next gateway when one does not answer; returns the final status
/// and body.
async fn send(
    http: &reqwest::Client,
    gateways: &mut Gateways,
    path: &str,
    key: &str,
    body: Value,
) -> Option<(u16, Value)> {
    for _ in 0..100 {
        match http.post(gateways.url(path)).header("Idempotency-Key", key).json(&body).send().await {
            Ok(r) if r.status().is_server_error() => {}
            Ok(r) => {
                let status = r.status().as_u16();
                return Some((status, r.json().await.unwrap_or(Value::Null)));
            }
            Err(_) => gateways.at += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn shopper(
    mut gateways: Gateways,
    tag: String,
    accepted: Arc<Mutex<Vec<(String, Instant)>>>,
    added: Arc<Mutex<Vec<String>>>,
    stopped: watch::Receiver<bool>,
) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    if tag.ends_with("-0") {
        race_for_the_scarce_product(&http, &mut gateways, &tag, &accepted, &added).await;
    }
    let mut i = 0u64;
    while !*stopped.borrow() {
        i += 1;
        let client = format!("{tag}-{i}");
        let (product, quantity) = match i % 10 {
            5 => ("lux", 1),
            n => (["p0", "p1", "p2", "p3"][(n % 4) as usize], 1 + (n % 3) as i64),
        };
        let add = json!({"clientID": client, "productID": product, "quantity": quantity});
        let Some((200, _)) = send(&http, &mut gateways, "/addToCart", &format!("add-{client}"), add).await else {
            continue;
        };
        added.lock().unwrap().push(client.clone());
        let checkout = json!({"clientID": client});
        if let Some((202, body)) = send(&http, &mut gateways, "/checkOutCart", &format!("co-{client}"), checkout).await
            && let Some(id) = body["orderID"].as_str()
        {
            accepted.lock().unwrap().push((id.to_owned(), Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn race_for_the_scarce_product(
    http: &reqwest::Client,
    gateways: &mut Gateways,
    tag: &str,
    accepted: &Mutex<Vec<(String, Instant)>>,
    added: &Mutex<Vec<String>>,
) {
    let racers: Vec<String> = (0..RACERS).map(|k| format!("{tag}-race-{k}")).collect();
    for client in &racers {
        let add = json!({"clientID": client, "productID": "scarce", "quantity": 2});
        let answer = send(http, gateways, "/addToCart", &format!("add-{client}"), add).await;
        assert!(matches!(answer, Some((200, _))), "a racer's add failed: {answer:?}");
        added.lock().unwrap().push(client.clone());
    }
    for client in &racers {
        let checkout = json!({"clientID": client});
        if let Some((202, body)) = send(http, gateways, "/checkOutCart", &format!("co-{client}"), checkout).await
            && let Some(id) = body["orderID"].as_str()
        {
            accepted.lock().unwrap().push((id.to_owned(), Instant::now()));
        }
    }
}

/// Puts one unit of p0 in `client`'s cart (for a checkout job sent by hand).
pub async fn add_for(gateway: &str, client: &str) {
    let http = reqwest::Client::new();
    let add = json!({"clientID": client, "productID": "p0", "quantity": 1});
    let answer = send(&http, &mut Gateways::one(gateway), "/addToCart", &format!("add-{client}"), add).await;
    assert!(matches!(answer, Some((200, _))), "{answer:?}");
}

/// Puts `SCARCE_UNITS` of the scarce product on hand (before a scenario, with no traffic).
pub async fn restock(inventory_url: &str) {
    let mut client = InventoryServiceClient::connect(inventory_url.to_owned()).await.expect("inventory reachable");
    let request = pb::UpsertProductRequest {
        product_id: "scarce".into(),
        name: "Scarce".into(),
        price_cents: 500,
        on_hand: SCARCE_UNITS,
    };
    client.upsert_product(request).await.expect("scarce restocked");
}
