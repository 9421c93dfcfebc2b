//! Carries out the plan against the deployment: each fault in a task of its own at its planned time,
//! injected, held for its duration, then healed, with its real start and end logged. A fault whose resource is
//! still held by an earlier one (a heal that ran long) is skipped and logged as such.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex as StdMutex},
    time::{Duration, Instant},
};

use serde::Serialize;
use sqlx::Connection as _;
use tokio::sync::Mutex;

use crate::{
    deployment::{Deployment, Instance},
    infra::{Forwarder, Postgres, postgres::MAX_CONNECTIONS},
    schedule::{Fault, Link, Planned},
};

/// How long a fault's injection and heal may take beyond its planned duration (a node's restart, a standby's
/// rebuild) before the run goes on without it, logging it as failed.
const HEAL_BOUND: Duration = Duration::from_secs(90);

/// One fault as it happened, times in milliseconds from the start of the run.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub fault: Fault,
    pub kind: &'static str,
    pub description: String,
    pub planned_ms: u64,
    pub started_ms: u64,
    pub ended_ms: u64,
    /// `ok`, `skipped: …` or `failed: …` (an injection or heal that did not work).
    pub outcome: String,
}

/// The faults' log, shared with the checker (for the SMTP window) and the report.
#[derive(Debug, Clone, Default)]
pub struct FaultLog(Arc<StdMutex<Vec<FaultRecord>>>);

impl FaultLog {
    pub fn records(&self) -> Vec<FaultRecord> {
        let mut records = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        records.sort_by_key(|r| r.started_ms);
        records
    }

    fn push(&self, record: FaultRecord) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(record);
    }
}

/// Milliseconds from `zero` to now.
pub fn ms_since(zero: Instant) -> u64 {
    u64::try_from(zero.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Runs every planned fault (from `start`), and returns once each has been healed.
pub async fn run(deployment: Arc<Deployment>, plan: Vec<Planned>, zero: Instant, start: Instant, log: FaultLog) {
    let mut held: HashMap<String, Arc<Mutex<()>>> = HashMap::new();
    let mut tasks = Vec::new();
    for planned in plan {
        let resource = held.entry(planned.fault.resource()).or_default().clone();
        let (deployment, log) = (deployment.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until((start + planned.at).into()).await;
            let description = planned.fault.describe();
            let planned_ms = u64::try_from((start + planned.at).duration_since(zero).as_millis()).unwrap_or(u64::MAX);
            let started_ms = ms_since(zero);
            let Ok(_guard) = resource.try_lock() else {
                tracing::info!(fault = %description, "skipped: an earlier fault still holds what it needs");
                log.push(record(&planned.fault, planned_ms, started_ms, "skipped: an earlier fault still holds it"));
                return;
            };
            tracing::info!(fault = %description, lasts = ?planned.lasts, "fault");
            // A fault runs in a task of its own so that a panicking helper fails it alone, not the run.
            let (fault, lasts, inner) = (planned.fault.clone(), planned.lasts, deployment.clone());
            let task = tokio::spawn(async move { inject(&inner, &fault, lasts).await });
            let outcome = match tokio::time::timeout(lasts + HEAL_BOUND, task).await {
                Ok(Ok(Ok(()))) => "ok".to_owned(),
                Ok(Ok(Err(e))) if e.is::<NotNow>() => format!("skipped: {e}"),
                Ok(Ok(Err(e))) => format!("failed: {e}"),
                Ok(Err(e)) => format!("failed: {e}"),
                Err(_) => format!("failed: not healed within {HEAL_BOUND:?} of its end"),
            };
            tracing::info!(fault = %description, %outcome, "healed");
            let mut rec = record(&planned.fault, planned_ms, started_ms, &outcome);
            rec.ended_ms = ms_since(zero);
            log.push(rec);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    if tokio::time::timeout(HEAL_BOUND, heal_everything(&deployment)).await.is_err() {
        tracing::error!("the final heal did not finish within {HEAL_BOUND:?}: a fault still holds a process");
    }
}

fn record(fault: &Fault, planned_ms: u64, started_ms: u64, outcome: &str) -> FaultRecord {
    FaultRecord {
        fault: fault.clone(),
        kind: fault.kind(),
        description: fault.describe(),
        planned_ms,
        started_ms,
        ended_ms: started_ms,
        outcome: outcome.to_owned(),
    }
}

/// A fault the deployment's state refuses now (a failover manager does not promote a standby that is not in
/// sync): logged as skipped, not as a failed injection.
#[derive(Debug)]
struct NotNow(String);

impl std::fmt::Display for NotNow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotNow {}

/// Runs a blocking helper (a `rabbitmqctl`, a `pg_ctl`) without holding up the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn instance<'a>(deployment: &'a Deployment, service: &str, number: usize) -> anyhow::Result<&'a Instance> {
    deployment
        .instances
        .iter()
        .find(|i| i.service == service && i.number == number)
        .ok_or_else(|| anyhow::anyhow!("no instance {service}#{number}"))
}

fn proxies(deployment: &Deployment, link: Link) -> Vec<&Forwarder> {
    match link {
        Link::Database => vec![&deployment.db_proxy],
        Link::Broker => deployment.broker_proxies.iter().collect(),
    }
}

async fn inject(deployment: &Deployment, fault: &Fault, lasts: Duration) -> anyhow::Result<()> {
    match fault {
        Fault::KillService { service, instance: n } => {
            let mut process = instance(deployment, service, *n)?.process.lock().await;
            process.kill9().await;
            tokio::time::sleep(lasts).await;
            process.start();
        }
        Fault::StallService { service, instance: n } => {
            let process = instance(deployment, service, *n)?.process.lock().await;
            process.signal("STOP");
            tokio::time::sleep(lasts).await;
            process.signal("CONT");
        }
        Fault::KillBrokerNode { node } => {
            blocking(|| deployment.cluster.kill9(*node));
            tokio::time::sleep(lasts).await;
            blocking(|| tokio::runtime::Handle::current().block_on(deployment.cluster.start(*node)));
        }
        Fault::StopBrokerNode { node } => {
            blocking(|| deployment.cluster.stop(*node));
            tokio::time::sleep(lasts).await;
            blocking(|| tokio::runtime::Handle::current().block_on(deployment.cluster.start(*node)));
        }
        Fault::PartitionBrokerNode { node } => {
            blocking(|| deployment.cluster.partition(*node));
            tokio::time::sleep(lasts).await;
            blocking(|| deployment.cluster.heal());
        }
        Fault::FailOverDatabase => fail_over(deployment).await?,
        Fault::LoseStandby => {
            // The servers' lock is held only to stop and to start the standby, not while it is away: the faults
            // that need the primary's address go on meanwhile. The replication resource keeps failovers out.
            {
                let database = deployment.database.lock().await;
                let standby = database.standby.as_ref().ok_or_else(|| anyhow::anyhow!("no standby to lose"))?;
                blocking(|| standby.try_stop()).map_err(anyhow::Error::msg)?;
            }
            tokio::time::sleep(lasts).await;
            let database = deployment.database.lock().await;
            let standby = database.standby.as_ref().ok_or_else(|| anyhow::anyhow!("the standby is gone"))?;
            blocking(|| standby.try_start()).map_err(anyhow::Error::msg)?;
        }
        Fault::SlowLink { link, delay_ms } => {
            for proxy in proxies(deployment, *link) {
                proxy.set_delay(Duration::from_millis(*delay_ms));
            }
            tokio::time::sleep(lasts).await;
            for proxy in proxies(deployment, *link) {
                proxy.set_delay(Duration::ZERO);
            }
        }
        Fault::CutLink { link, times } => {
            for i in 0..*times {
                if i > 0 {
                    tokio::time::sleep(lasts / *times).await;
                }
                for proxy in proxies(deployment, *link) {
                    proxy.cut();
                }
            }
        }
        Fault::HoldHotRow { product } => {
            let url = deployment.direct_url("inventory").await;
            let mut conn = sqlx::PgConnection::connect(&url).await?;
            let mut tx = conn.begin().await?;
            sqlx::query("SELECT product_id FROM stock WHERE product_id = $1 FOR UPDATE")
                .bind(product)
                .execute(&mut *tx)
                .await?;
            tokio::time::sleep(lasts).await;
            tx.rollback().await?;
        }
        Fault::FillConnections => {
            let url = deployment.direct_url("inventory").await;
            let mut probe = sqlx::PgConnection::connect(&url).await?;
            let used: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
                    .fetch_one(&mut probe)
                    .await?;
            // Three slots are reserved for superusers (the services connect as one here, as `postgres`); leave
            // four more, so the mesh is starved, not shut out.
            let take = i64::from(MAX_CONNECTIONS) - 3 - used - 4;
            let mut idle = Vec::new();
            for _ in 0..take.max(0) {
                match sqlx::PgConnection::connect(&url).await {
                    Ok(conn) => idle.push(conn),
                    Err(_) => break,
                }
            }
            drop(probe);
            tokio::time::sleep(lasts).await;
            for conn in idle {
                let _ = conn.close().await;
            }
        }
        Fault::JumpClock { service, instance: n, offset_ms } => {
            let clock = &instance(deployment, service, *n)?.clock;
            #[allow(clippy::cast_precision_loss)] // a few thousand milliseconds
            let offset = *offset_ms as f64 / 1000.0;
            std::fs::write(clock, format!("{offset:+.3}s"))?;
            tokio::time::sleep(lasts).await;
            std::fs::write(clock, "+0s")?;
        }
    }
    Ok(())
}

/// Kills the primary, promotes the standby, moves the stable address, then builds a new synchronous standby
/// from the new primary. Only a standby in sync is promoted: otherwise the fault is refused, as a failover
/// manager refuses to promote a lagging standby.
async fn fail_over(deployment: &Deployment) -> anyhow::Result<()> {
    let mut database = deployment.database.lock().await;
    let sync = blocking(|| database.primary.try_sql("SELECT string_agg(sync_state, ',') FROM pg_stat_replication"));
    if sync.as_deref() != Ok("sync") {
        return Err(NotNow(format!("the standby is not in sync ({sync:?}), so it is not promoted")).into());
    }
    let standby = database.standby.take().ok_or_else(|| anyhow::anyhow!("no standby"))?;
    blocking(|| database.primary.kill9());
    blocking(|| standby.promote());
    deployment.db_proxy.repoint(standby.port);
    let old = std::mem::replace(&mut database.primary, standby);
    database.retired.push(old);
    database.built += 1;
    let name = format!("pg-standby-{}", database.built);
    let primary: &Postgres = &database.primary;
    let standby = blocking(|| Postgres::synchronous_standby(primary, &deployment.dir, &name));
    database.standby = Some(standby);
    Ok(())
}

/// After the last fault: every process running and resumed, every link and clock normal, no partition.
async fn heal_everything(deployment: &Deployment) {
    for instance in &deployment.instances {
        let mut process = instance.process.lock().await;
        process.signal("CONT");
        if !process.is_running() {
            tracing::warn!(instance = %instance.name(), "not running after the faults: started");
            process.start();
        }
        let _ = std::fs::write(&instance.clock, "+0s");
    }
    for proxy in deployment.broker_proxies.iter().chain([&deployment.db_proxy]) {
        proxy.set_delay(Duration::ZERO);
    }
    blocking(|| deployment.cluster.heal());
}
