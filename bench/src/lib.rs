//! ordermesh-bench: drives a running mesh through its public APIs only (HTTP for shoppers, gRPC
//! `UpsertProduct` to prepare its own catalogue) and reports what a shop owner would ask: how many
//! checkouts per second were offered, accepted and completed, how long each step took (from a real
//! histogram, measured from the scheduled start so a slow mesh cannot hide its latency), how orders
//! ended, and whether any unit was oversold.
//!
//! `options` parses the command line, `shopper` is one simulated customer, `report` renders the table,
//! the JSON and the SVG picture.

pub mod floor;
pub mod options;
pub mod report;
mod shopper;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub use options::{Mode, Options, Scenario};
use ordermesh_proto::inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient};
pub use report::Report;
use shopper::{Outcome, Shopper};
use tokio::sync::Semaphore;

/// Price of the product a `mixed` cart sometimes holds: more than a new shopper's balance, so declined.
const LUXURY_CENTS: i64 = 150_000;
/// Products a `spread` or `mixed` load is spread over.
const SPREAD_PRODUCTS: usize = 50;
/// Units of each spread product: enough never to run out.
const SPREAD_STOCK: i64 = 10_000_000;

/// The catalogue one run prepared: (product id, units put on hand).
#[derive(Debug, Clone)]
pub struct Catalogue {
    /// Products shoppers buy from.
    pub products: Vec<(String, i64)>,
    /// The hot product (`hot`), or the luxury one (`mixed`).
    pub special: Option<String>,
}

/// A client of the run's inventory, presenting the operator token if one was given.
fn inventory_client(options: &Options) -> anyhow::Result<InventoryServiceClient<ordermesh_proto::Balanced>> {
    let token = options.inventory_token.as_ref().map(|t| t.0.as_str());
    // An https:// inventory: its CA and (for mutual TLS) a client certificate, read as the services read them.
    let env = |k: &str| std::env::var(k).ok();
    let tls = ordermesh_config::ClientTls {
        ca: ordermesh_config::tls::ca_from("INVENTORY_CA_FILE", env)?,
        identity: ordermesh_config::tls::identity_from("INVENTORY_CLIENT", env)?,
    };
    pb::lazy_client(&options.inventory, Duration::from_secs(10), token, &tls)
        .map_err(|e| anyhow::anyhow!("--inventory: {e}"))
}

/// Prepares the run's own products (ids prefixed by `run`), so runs never share stock.
pub async fn prepare(options: &Options, run: &str) -> anyhow::Result<Catalogue> {
    let inventory = inventory_client(options)?;
    let upsert = |id: String, price_cents: i64, on_hand: i64| {
        let request =
            pb::UpsertProductRequest { product_id: id.clone(), name: format!("bench {id}"), price_cents, on_hand };
        let mut inventory = inventory.clone();
        async move { inventory.upsert_product(request).await.map(|_| (id, on_hand)) }
    };
    let catalogue = match options.scenario {
        Scenario::Spread | Scenario::Mixed => {
            let mut products = Vec::new();
            for i in 0..SPREAD_PRODUCTS {
                products.push(upsert(format!("{run}-p{i}"), 500 + (i as i64) * 10, SPREAD_STOCK).await?);
            }
            let special = if options.scenario == Scenario::Mixed {
                let (id, units) = upsert(format!("{run}-lux"), LUXURY_CENTS, SPREAD_STOCK).await?;
                products.push((id.clone(), units));
                Some(id)
            } else {
                None
            };
            Catalogue { products, special }
        }
        Scenario::Hot => {
            let (id, units) = upsert(format!("{run}-hot"), 1_000, options.hot_stock).await?;
            Catalogue { products: vec![(id.clone(), units)], special: Some(id) }
        }
    };
    Ok(catalogue)
}

/// Runs the load as `options` say and returns the report (the stock check included).
pub async fn run(options: Options) -> anyhow::Result<Report> {
    // Measured first, on the idle box, with the run's own number in flight.
    let floor = if options.with_floor {
        Some(
            floor::measure(
                &options.amqp,
                &options.database,
                options.floor_in_flight(),
                Duration::from_secs(5),
                options.checkout_work,
            )
            .await?,
        )
    } else {
        None
    };
    let run = format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let catalogue = Arc::new(prepare(&options, &run).await?);
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &options.api_key {
        let mut value = reqwest::header::HeaderValue::from_str(&key.0)?;
        value.set_sensitive(true);
        headers.insert("x-api-key", value);
    }
    let mut http = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .pool_max_idle_per_host(1024)
        .default_headers(headers);
    // An https:// gateway with a private CA (GATEWAY_CA_FILE), as a TLS deployment's clients would have it.
    if let Some(ca) = ordermesh_config::tls::ca_from("GATEWAY_CA_FILE", |k| std::env::var(k).ok())? {
        http = http.add_root_certificate(reqwest::Certificate::from_pem(&ca.pem)?);
    }
    let http = http.build()?;
    let report = Arc::new(Mutex::new(Report::new(&options)));
    let started = Instant::now();
    let progress = spawn_progress(report.clone(), started, options.quiet);
    let template = Shopper {
        http,
        gateway: options.gateway.clone(),
        client: String::new(),
        scenario: options.scenario,
        catalogue: catalogue.clone(),
        n: 0,
        final_wait: options.final_wait,
    };
    let shopper = move |n: u64| Shopper { client: format!("{run}-c{n}"), n, ..template.clone() };

    let mut tasks = tokio::task::JoinSet::new();
    match options.mode {
        Mode::Open { rate } => {
            // Arrivals on a fixed schedule whatever the mesh does (open loop): latency is measured from each
            // scheduled start, so a mesh that falls behind shows it instead of slowing the generator down.
            let interval = Duration::from_secs_f64(1.0 / rate);
            let in_flight = Arc::new(Semaphore::new(options.max_in_flight));
            let mut n = 0u64;
            loop {
                let due = started + interval.mul_f64(n as f64);
                if due.duration_since(started) >= options.duration {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                report.lock().unwrap().offered += 1;
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    report.lock().unwrap().error("generator: too many shoppers in flight");
                    n += 1;
                    continue;
                };
                let shopper = shopper(n);
                let report = report.clone();
                tasks.spawn(async move {
                    let outcome = shopper.shop(due).await;
                    report.lock().unwrap().record(outcome);
                    drop(permit);
                });
                n += 1;
            }
        }
        Mode::Closed { concurrency } => {
            let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
            for _ in 0..concurrency {
                let next = next.clone();
                let report = report.clone();
                let shopper = shopper.clone();
                let until = started + options.duration;
                tasks.spawn(async move {
                    while Instant::now() < until {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        report.lock().unwrap().offered += 1;
                        let outcome: Outcome = shopper(n).shop(Instant::now()).await;
                        report.lock().unwrap().record(outcome);
                    }
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    progress.abort();
    let mut report = std::mem::replace(&mut *report.lock().unwrap(), Report::new(&options));
    report.elapsed = started.elapsed();
    report.stock = Some(check_stock(&options, &catalogue, &report).await?);
    report.floor = floor;
    Ok(report)
}

fn spawn_progress(report: Arc<Mutex<Report>>, started: Instant, quiet: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if quiet {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let line = report.lock().unwrap().progress(started.elapsed());
            eprintln!("{line}");
        }
    })
}

/// After the run: nothing may be held any more for the run's products, and the units sold (on hand at
/// start − on hand now) must equal the units in CONFIRMED orders, and never exceed what was on hand.
async fn check_stock(options: &Options, catalogue: &Catalogue, report: &Report) -> anyhow::Result<report::StockCheck> {
    let mut inventory = inventory_client(options)?;
    let mut check = report::StockCheck::default();
    for (id, initial) in &catalogue.products {
        let q = inventory
            .get_available_quantity(pb::GetAvailableQuantityRequest { product_id: id.clone() })
            .await?
            .into_inner();
        let sold = initial - q.on_hand;
        check.sold += sold;
        check.still_reserved += q.reserved;
        check.oversold += (sold - initial).max(0);
    }
    check.confirmed_units = report.confirmed_units;
    // Orders whose end was not seen may hold sold units: then sold may exceed what was seen confirmed.
    let sold_matches = if report.unknown_final == 0 {
        check.sold == check.confirmed_units
    } else {
        check.sold >= check.confirmed_units
    };
    check.balanced = check.still_reserved == 0 && check.oversold == 0 && sold_matches;
    Ok(check)
}
