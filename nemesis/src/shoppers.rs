//! Shoppers that use the public API as the README tells a client to: an `Idempotency-Key` on every add,
//! removal and checkout, the same key again on a 5xx, a 504, a 429 or a broken connection (moving to the other
//! gateway, as a load balancer would), and the order read with `waitSeconds` until it is final. Each
//! session is one new client on one channel's key: maybe an email address, adds (the scarce product raced
//! for, the luxury one over any balance), maybe a removal, a checkout, sometimes an add racing it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{
    faults::ms_since,
    history::{Answer, Attempt, History, Op, Request},
};

/// How long a shopper keeps retrying one request before giving up on it.
const PATIENCE: Duration = Duration::from_secs(60);
/// Pause between tries.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// How long a shopper waits for an order to be final; after the stop, only this long past it.
const ORDER_PATIENCE: Duration = Duration::from_secs(90);
const AFTER_STOP: Duration = Duration::from_secs(20);

pub const FINAL: [&str; 4] = ["CONFIRMED", "REJECTED", "PAYMENT_DECLINED", "FAILED"];

/// The running shoppers.
#[derive(Debug)]
pub struct Shoppers {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    context: Arc<Context>,
    keys: Vec<(String, String)>,
}

#[derive(Debug)]
struct Context {
    http: reqwest::Client,
    gateways: Vec<String>,
    history: History,
    zero: Instant,
    next_op: AtomicU64,
    stopped: watch::Receiver<bool>,
}

impl Shoppers {
    /// Starts `count` shoppers on `gateways`, with `keys` (channel, key) to choose from.
    pub fn start(
        count: usize,
        gateways: &[String],
        keys: &[(String, String)],
        seed: u64,
        history: History,
        zero: Instant,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().expect("an HTTP client");
        let context =
            Arc::new(Context { http, gateways: gateways.to_vec(), history, zero, next_op: AtomicU64::new(0), stopped });
        let tasks = (0..count)
            .map(|n| {
                let (context, keys) = (context.clone(), keys.to_vec());
                tokio::spawn(async move { shopper(n, &context, keys, seed).await })
            })
            .collect();
        Self { stop, tasks, context, keys: keys.to_vec() }
    }

    /// `racers` new clients each put 2 of the scarce product in their cart, then all check out at once: when
    /// fewer than all of them fit in what is on hand, the last to reserve are REJECTED.
    pub async fn race(&self, round: u64, racers: usize) {
        let barrier = Arc::new(tokio::sync::Barrier::new(racers));
        let runs = (0..racers).map(|k| {
            let (channel, api_key) = self.keys[k % self.keys.len()].clone();
            let barrier = barrier.clone();
            let mut client = Client {
                context: &self.context,
                shopper: RACER + k,
                gateway: k,
                client: format!("race{round}-{k}"),
                channel,
                api_key,
                requests: 0,
            };
            async move {
                client.add("scarce", 2, false).await;
                barrier.wait().await;
                if let Some(order_id) = client.checkout(false).await {
                    client.follow(&order_id).await;
                }
            }
        });
        futures::future::join_all(runs).await;
    }

    /// Lets every shopper finish its session, then returns.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Racers are numbered from here in the history (shoppers from 0).
pub const RACER: usize = 1000;

async fn shopper(n: usize, context: &Context, keys: Vec<(String, String)>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(n as u64 + 1)));
    let mut session = 0u64;
    while !*context.stopped.borrow() {
        session += 1;
        let (channel, key) = &keys[rng.random_range(0..keys.len())];
        let mut client = Client {
            context,
            shopper: n,
            gateway: n,
            client: format!("s{n}-{session}"),
            channel: channel.clone(),
            api_key: key.clone(),
            requests: 0,
        };
        client.session(&mut rng).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..100))).await;
    }
}

/// One client's session, by one shopper.
struct Client<'a> {
    context: &'a Context,
    shopper: usize,
    /// The gateway this client uses now.
    gateway: usize,
    client: String,
    channel: String,
    api_key: String,
    /// Requests sent so far (each key is the client id and this count).
    requests: u32,
}

impl Client<'_> {
    async fn session(&mut self, rng: &mut StdRng) {
        if rng.random_bool(0.5) {
            let email = format!("{}@example.com", self.client);
            self.send(Request::SetEmail { email }, false).await;
        }
        let plenty = ["p0", "p1", "p2", "p3"];
        let (main, quantity) = match rng.random_range(0..100) {
            0..12 => ("scarce", 2),
            12..22 => ("lux", 1),
            _ => (plenty[rng.random_range(0..4)], rng.random_range(1..=3)),
        };
        self.add(main, quantity, false).await;
        if rng.random_bool(0.4) {
            let second = plenty.iter().copied().find(|p| *p != main).unwrap_or("p0");
            let second = if rng.random_bool(0.5) { second } else { plenty[rng.random_range(0..4)] };
            self.add(second, rng.random_range(1..=2), false).await;
            if rng.random_bool(0.3) {
                self.send(Request::Remove { product: second.to_owned() }, false).await;
            }
        }
        if rng.random_bool(0.2) {
            self.add(main, 1, false).await;
        }
        let racing = rng.random_bool(0.2);
        let mut order = self.checkout(racing).await;
        if order.is_none() && racing {
            // A 409 for a cart that kept changing: nothing was checked out, so check out again.
            order = self.checkout(false).await;
        }
        if let Some(order_id) = order {
            self.follow(&order_id).await;
        }
    }

    async fn add(&mut self, product: &str, quantity: i64, concurrent: bool) {
        self.send(Request::Add { product: product.to_owned(), quantity }, concurrent).await;
    }

    /// Checks out (with an add racing it when `racing`); the order id when accepted.
    async fn checkout(&mut self, racing: bool) -> Option<String> {
        let op = if racing {
            let mut twin = Client { requests: self.requests + 1000, gateway: self.gateway + 1, ..self.clone_parts() };
            let (op, ()) = tokio::join!(self.send(Request::Checkout, false), twin.add("p3", 1, true));
            op
        } else {
            self.send(Request::Checkout, false).await
        };
        let body = op.done()?;
        body["orderID"].as_str().map(str::to_owned)
    }

    fn clone_parts(&self) -> Self {
        Client {
            context: self.context,
            shopper: self.shopper,
            gateway: self.gateway,
            client: self.client.clone(),
            channel: self.channel.clone(),
            api_key: self.api_key.clone(),
            requests: self.requests,
        }
    }

    /// Reads the order with `waitSeconds` until it is final (or the shopper's patience ends).
    async fn follow(&mut self, order_id: &str) {
        let started = Instant::now();
        let mut stopped_at: Option<Instant> = None;
        loop {
            let op = self.send(Request::ReadOrder { order_id: order_id.to_owned() }, false).await;
            let status = op.done().and_then(|b| b["status"].as_str()).unwrap_or_default().to_owned();
            if FINAL.contains(&status.as_str()) || matches!(op.answer, Answer::Refused { .. }) {
                return;
            }
            if *self.context.stopped.borrow() {
                let since = *stopped_at.get_or_insert_with(Instant::now);
                if since.elapsed() > AFTER_STOP {
                    return;
                }
            }
            if started.elapsed() > ORDER_PATIENCE {
                return;
            }
        }
    }

    /// Sends one request until it is judged (2xx or 4xx) or the shopper's patience runs out, and records it.
    async fn send(&mut self, request: Request, concurrent: bool) -> Op {
        let zero = self.context.zero;
        self.requests += 1;
        let key = match &request {
            Request::Add { .. } | Request::Remove { .. } | Request::Checkout => {
                Some(format!("{}-{}", self.client, self.requests))
            }
            _ => None,
        };
        let started = Instant::now();
        let started_ms = ms_since(zero);
        let mut attempts = Vec::new();
        let answer = loop {
            let gateway = self.gateway % self.context.gateways.len();
            let base = &self.context.gateways[gateway];
            let http = &self.context.http;
            let builder = match &request {
                Request::SetEmail { email } => {
                    http.put(format!("{base}/clients/{}", self.client)).json(&json!({ "email": email }))
                }
                Request::Add { product, quantity } => http
                    .post(format!("{base}/addToCart"))
                    .json(&json!({"clientID": self.client, "productID": product, "quantity": quantity})),
                Request::Remove { product } => http.delete(format!("{base}/cart/{}/items/{product}", self.client)),
                Request::Checkout => http.post(format!("{base}/checkOutCart")).json(&json!({"clientID": self.client})),
                Request::ReadOrder { order_id } => http.get(format!("{base}/orders/{order_id}?waitSeconds=5")),
            };
            let mut builder = builder.header("X-API-Key", &self.api_key);
            if let Some(key) = &key {
                builder = builder.header("Idempotency-Key", key);
            }
            let sent_ms = ms_since(zero);
            let result = builder.send().await;
            let (status, body, error) = match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = response.json::<Value>().await.unwrap_or(Value::Null);
                    (Some(status), body, None)
                }
                Err(e) => (None, Value::Null, Some(error_text(&e))),
            };
            attempts.push(Attempt { sent_ms, answered_ms: ms_since(zero), gateway, status, error });
            match status {
                Some(s @ 200..=299) => break Answer::Done { status: s, body },
                Some(s @ 400..=499) if s != 429 => break Answer::Refused { status: s, body },
                _ => {}
            }
            // No judgement: the same request again, through the other gateway.
            self.gateway += 1;
            if started.elapsed() > PATIENCE {
                break Answer::GaveUp;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        };
        let op = Op {
            id: self.context.next_op.fetch_add(1, Ordering::Relaxed),
            shopper: self.shopper,
            client: self.client.clone(),
            channel: self.channel.clone(),
            request,
            key,
            concurrent,
            started_ms,
            ended_ms: ms_since(zero),
            attempts,
            answer,
        };
        self.context.history.push(op.clone());
        op
    }
}

fn error_text(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "no connection".into()
    } else {
        "connection broken".into()
    }
}
