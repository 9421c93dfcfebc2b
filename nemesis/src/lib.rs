//! The nemesis: minutes of random, overlapping faults on the whole mesh, run as real processes (two instances
//! of every service) on a private three-node RabbitMQ cluster and a private PostgreSQL primary with a
//! synchronous standby, while shoppers record every request and answer; then a checker reads that history and
//! the final state of every database and queue against the mesh's promises. A seed names the fault plan.
//!
//! `deployment` builds the mesh, `schedule` draws the plan, `faults` carries it out, `shoppers` drive the
//! public API into `history`, `checker` judges, `report` tells. `infra` is the private infrastructure, shared
//! with the fault suite.

pub mod checker;
pub mod deployment;
pub mod faults;
pub mod history;
pub mod infra;
pub mod report;
pub mod schedule;
pub mod shoppers;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lapin::options::QueueDeclareOptions;
use ordermesh_bus::Topology;
use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::{
    checker::{State, Violation},
    deployment::{Deployment, SCARCE_UNITS},
    faults::{FaultLog, ms_since},
    history::History,
    shoppers::Shoppers,
};

/// Every order must be final this soon after the last fault was healed.
pub const SETTLE_BOUND: Duration = Duration::from_secs(60);
/// Shoppers run alone this long before the first fault.
const WARM_UP: Duration = Duration::from_secs(5);
/// How often the scarce product is put back to [`SCARCE_UNITS`], so that shoppers keep racing for it.
const RESTOCK_EVERY: Duration = Duration::from_secs(10);
/// Clients racing for the scarce product's units after each restock, 2 units each.
const RACERS: usize = 5;

#[derive(Debug)]
pub struct Options {
    pub minutes: f64,
    pub seed: u64,
    pub shoppers: usize,
    /// Where the history, the fault log, the plan and the report are written.
    pub out: PathBuf,
    /// Where the services' and `ordermesh`'s binaries are.
    pub binaries: PathBuf,
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    pub violations: Vec<Violation>,
    pub report: String,
}

/// Runs the nemesis as `options` say; the violations found and the report (also written to `options.out`).
pub async fn run(options: &Options) -> anyhow::Result<Outcome> {
    let uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    anyhow::ensure!(
        uid.as_deref().ok() == Some("0"),
        "the nemesis starts private PostgreSQL servers (as user postgres), RabbitMQ nodes and packet filters: run it as root"
    );
    std::fs::create_dir_all(&options.out).with_context(|| format!("creating {}", options.out.display()))?;
    let zero = Instant::now();
    let dir = std::env::temp_dir().join(format!("ordermesh-nemesis-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    tracing::info!(seed = options.seed, minutes = options.minutes, dir = %dir.display(), "starting the mesh");
    let deployment = Arc::new(Deployment::start(&dir, &options.binaries).await?);
    deployment.seed().await?;
    let keys = deployment.shopper_keys().await?;

    let mails = Arc::new(std::sync::Mutex::new(Vec::<(u64, String, String)>::new()));
    let watcher = tokio::spawn(watch_mail(deployment.clone(), mails.clone(), zero));
    let history = History::default();
    let shoppers =
        Arc::new(Shoppers::start(options.shoppers, &deployment.gateways, &keys, options.seed, history.clone(), zero));
    let restocking = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let restocker = tokio::spawn(restock(deployment.clone(), shoppers.clone(), restocking.clone()));
    tokio::time::sleep(WARM_UP).await;

    let length = Duration::from_secs_f64(options.minutes * 60.0);
    let plan = schedule::plan(options.seed, length);
    std::fs::write(options.out.join("plan.json"), serde_json::to_string_pretty(&plan)?)?;
    tracing::info!(faults = plan.len(), "the nemesis begins");
    let log = FaultLog::default();
    let faults_from_ms = ms_since(zero);
    faults::run(deployment.clone(), plan, zero, Instant::now(), log.clone()).await;
    let healed = Instant::now();
    let faults_to_ms = ms_since(zero);
    tracing::info!("every fault healed; the shoppers finish their sessions");
    // Not aborted: a race cut off mid-request would leave effects no history records.
    restocking.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = restocker.await;
    let shoppers = Arc::into_inner(shoppers).context("the restocker still holds the shoppers")?;
    shoppers.stop().await;

    let checkout = pool(&deployment, "checkout").await?;
    let cart = pool(&deployment, "cart").await?;
    let inventory = pool(&deployment, "inventory").await?;
    let settled_after = settle(&checkout, &cart, healed).await;
    let amqp = deployment.cluster.url();
    // Emails go out after the orders are final: give them their time before judging.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (state, violations) = loop {
        let snapshot = mails.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let done = Instant::now() > deadline;
        let audit = if done { deployment.audit(Duration::from_secs(120)).await } else { (true, String::new()) };
        let state = State::read(&checkout, &cart, &inventory, snapshot, queue_depths(&amqp).await, audit).await?;
        let violations = checker::check(&history.ops(), &state, &log.records());
        if done {
            break (state, violations);
        }
        if violations.is_empty() {
            let audit = deployment.audit(Duration::from_secs(120)).await;
            let state = State { audit, ..state };
            let violations = checker::check(&history.ops(), &state, &log.records());
            break (state, violations);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    watcher.abort();
    // Awaited, so that its hold on the deployment is gone before the deployment is torn down below.
    let _ = watcher.await;

    let ops = history.ops();
    let records = log.records();
    let run = report::Run {
        seed: options.seed,
        minutes: options.minutes,
        shoppers: options.shoppers,
        faults_from_ms,
        faults_to_ms,
        settled_after,
        settle_bound: SETTLE_BOUND,
    };
    let mut violations = violations;
    if settled_after.is_none() && !violations.iter().any(|v| v.check == "not final") {
        violations.push(Violation { check: "not final", detail: format!("not settled within {SETTLE_BOUND:?}") });
    }
    let report = report::render(&run, &ops, &records, &state, &violations);
    std::fs::write(options.out.join("history.jsonl"), History::to_jsonl(&ops))?;
    let fault_lines: String = records.iter().filter_map(|r| serde_json::to_string(r).ok()).map(|l| l + "\n").collect();
    std::fs::write(options.out.join("faults.jsonl"), fault_lines)?;
    std::fs::write(options.out.join("audit.txt"), &state.audit.1)?;
    std::fs::write(options.out.join("report.md"), &report)?;
    for pool in [checkout, cart, inventory] {
        pool.close().await;
    }
    // Torn down here, while the directory still holds the pid files the teardown kills by; the directory is
    // removed only after that (a run that removed it first left RabbitMQ nodes running).
    match Arc::into_inner(deployment) {
        Some(deployment) => drop(deployment),
        None => tracing::error!("the deployment is still shared: its servers are stopped when the process ends"),
    }
    if violations.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        // The services' logs, for whoever looks into a violation.
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                let _ = std::fs::copy(entry.path(), options.out.join(entry.file_name()));
            }
        }
    }
    Ok(Outcome { violations, report })
}

async fn pool(deployment: &Deployment, database: &str) -> anyhow::Result<PgPool> {
    let url = deployment.direct_url(database).await;
    PgPoolOptions::new().max_connections(2).connect(&url).await.with_context(|| format!("connecting to {url}"))
}

/// Waits until every order is final and cart-manager's outbox is empty; how long after `healed` that was,
/// or none if not within [`SETTLE_BOUND`].
async fn settle(checkout: &PgPool, cart: &PgPool, healed: Instant) -> Option<Duration> {
    loop {
        let open: Result<i64, _> =
            sqlx::query_scalar("SELECT count(*) FROM orders WHERE step <> 'done'").fetch_one(checkout).await;
        let outbox: Result<i64, _> =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE parked_at IS NULL").fetch_one(cart).await;
        if matches!((open, outbox), (Ok(0), Ok(0))) {
            return Some(healed.elapsed());
        }
        if healed.elapsed() > SETTLE_BOUND {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Messages ready on each work queue.
async fn queue_depths(url: &str) -> BTreeMap<String, u32> {
    let mut depths = BTreeMap::new();
    let Ok(conn) = ordermesh_bus::connection::connect_first(url).await else { return depths };
    for queue in Topology::default().work_queues() {
        let Ok(channel) = conn.create_channel().await else { continue };
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        if let Ok(q) = channel.queue_declare(queue.as_str().into(), passive, Default::default()).await {
            depths.insert(queue.clone(), q.message_count());
        }
        let _ = channel.close(200, "looked".into()).await;
    }
    let _ = conn.close(200, "looked".into()).await;
    depths
}

/// Records each email the SMTP server accepts, with when it was first seen.
async fn watch_mail(
    deployment: Arc<Deployment>,
    mails: Arc<std::sync::Mutex<Vec<(u64, String, String)>>>,
    zero: Instant,
) {
    loop {
        let accepted = deployment.smtp.accepted();
        {
            let mut seen = mails.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let at = ms_since(zero);
            for mail in accepted.iter().skip(seen.len()) {
                seen.push((at, mail.header("Message-ID").unwrap_or_default(), mail.body()));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Puts the scarce product back every [`RESTOCK_EVERY`], as a shop's operator does, and sends five racers
/// for its six units.
async fn restock(deployment: Arc<Deployment>, shoppers: Arc<Shoppers>, go_on: Arc<std::sync::atomic::AtomicBool>) {
    for round in 1.. {
        let next = Instant::now() + RESTOCK_EVERY;
        while Instant::now() < next {
            if !go_on.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match deployment.upsert("scarce", 500, SCARCE_UNITS).await {
            Ok(()) => shoppers.race(round, RACERS).await,
            Err(e) => tracing::info!(error = %e, "restock refused (inventory unreachable): tried again later"),
        }
    }
}
