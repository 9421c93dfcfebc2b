//! The transactional outbox: a service writes the message in the same transaction as its state
//! change, and the relay publishes it (with confirms) and then deletes it.
//!
//! A crash before the commit loses both, a crash after it loses neither; a crash between publish
//! and delete publishes twice, which consumers absorb by being idempotent. Every service that uses
//! it has the same `outbox` table in its own database (see its migrations).
//!
//! Rows are sent under a lease (`claimed_until`), so no row lock or pooled connection is held while the
//! relay waits for the broker, and a relay that dies leaves its claim to run out. A writer that knows its
//! rows' ids writes them already claimed and hands them to its relay after the commit ([`Handoff`]);
//! other rows, and those whose claim ran out, a relay claims in one short statement when it scans. A row
//! that does not decode is parked (`parked_at`, `parked_reason`) for the audit instead of blocking the rest.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use ordermesh_messages::{Envelope, EnvelopeHead};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Notify, watch};

use crate::publisher::{Publisher, Stored};

/// Most messages one relay pass publishes.
const BATCH: i64 = 200;
/// The length of a claim in seconds, for a relay's scan and for the rows a writer hands to its own relay
/// ([`Handoff`]) alike: how long a claimed row is left to its relay before another may publish it. Above the
/// publish deadline (5 s), and short, because a relay killed mid-publish leaves its rows claimed this long.
/// Statements bind it: `claimed_until = now() + make_interval(secs => $n)`.
pub const HANDED_CLAIM_SECS: f64 = 8.0;
/// How long published rows wait to be deleted together (one statement for all of them, or folded into the
/// next claim): far below the claim, so they are never sent twice by waiting.
const FLUSH_AFTER: Duration = Duration::from_millis(10);
/// The shortest sleep between passes when a row is due but was not claimable (another relay's claim
/// statement held it): keeps two relays from spinning on each other.
const MIN_PAUSE: Duration = Duration::from_millis(20);

/// An outbox row as the relay sends it: id, exchange, routing key and the encoded envelope.
pub type Row = (i64, String, String, Vec<u8>);

/// What a process's writers tell its relay. A writer that knows its rows' ids inserts them already claimed
/// ([`HANDED_CLAIM_SECS`]) and hands them over after its commit: the relay sends them without looking for them
/// (no claim statement, no scan of the outbox). If this process dies first, the claim runs out and any
/// relay's next scan sends them. A writer that does not know its ids inserts them unclaimed and asks for a
/// scan ([`Handoff::wake`]).
#[derive(Debug, Default)]
pub struct Handoff {
    rows: std::sync::Mutex<Vec<Row>>,
    scan: AtomicBool,
    notify: Notify,
}

impl Handoff {
    /// Gives the relay rows committed with [`HANDED_CLAIM_SECS`]; call after the commit only.
    pub fn hand(&self, rows: Vec<Row>) {
        if rows.is_empty() {
            return;
        }
        self.rows.lock().expect("outbox handoff lock").extend(rows);
        self.notify.notify_one();
    }

    /// Asks the relay to scan the outbox: rows were committed unclaimed.
    pub fn wake(&self) {
        self.scan.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    fn take(&self) -> Vec<Row> {
        std::mem::take(&mut *self.rows.lock().expect("outbox handoff lock"))
    }

    fn take_scan(&self) -> bool {
        self.scan.swap(false, Ordering::AcqRel)
    }
}

/// Adds a message to the outbox inside the caller's transaction.
pub async fn enqueue(
    conn: &mut PgConnection,
    exchange: &str,
    routing_key: &str,
    envelope: &Envelope,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO outbox (exchange, routing_key, message_id, body) VALUES ($1, $2, $3, $4)",
        exchange,
        routing_key,
        envelope.message_id,
        envelope.to_vec_traced(ordermesh_telemetry::trace::traceparent())
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds messages for one destination to the outbox in one statement, unclaimed: the caller wakes its relay
/// ([`Handoff::wake`]) once they are committed.
pub async fn enqueue_all<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    exchange: &str,
    routing_key: &str,
    envelopes: &[Envelope],
) -> sqlx::Result<()> {
    let message_ids: Vec<uuid::Uuid> = envelopes.iter().map(|e| e.message_id).collect();
    let bodies: Vec<Vec<u8>> =
        envelopes.iter().map(|e| e.to_vec_traced(ordermesh_telemetry::trace::traceparent())).collect();
    sqlx::query!(
        "INSERT INTO outbox (exchange, routing_key, message_id, body)
         SELECT $1, $2, m.message_id, m.body FROM UNNEST($3::uuid[], $4::bytea[]) AS m(message_id, body)",
        exchange,
        routing_key,
        &message_ids,
        &bodies
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Publishes what the outbox holds: handed rows at once, and in a scan the rows written unclaimed (when
/// `handoff` is woken), rows whose claim ran out (a relay that died, or a publish that failed), and every
/// `idle` anyway (rows written by an instance that died before its relay ran). Published rows are deleted
/// together shortly after. An idle relay costs one query per `idle`.
pub async fn run_relay(
    pool: PgPool,
    publisher: Arc<Publisher>,
    handoff: Arc<Handoff>,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut relay = Relay::new(pool, publisher);
    let mut failures = 0u32;
    // The first scan, at once, takes what an earlier run left.
    let mut scan_at = Instant::now();
    loop {
        // While failing, handed rows wait for the retry time with the scan.
        if failures == 0 || Instant::now() >= scan_at {
            let handed = handoff.take();
            if !handed.is_empty() {
                match relay.send(handed).await {
                    Ok(_) => failures = 0,
                    Err(err) => {
                        failures = failures.saturating_add(1);
                        warn_failure(&err, failures);
                        scan_at = Instant::now() + retry_after(failures);
                    }
                }
            }
        }
        if handoff.take_scan() && failures == 0 {
            scan_at = Instant::now();
        }
        if Instant::now() >= scan_at {
            scan_at = match relay.pass().await {
                // A full batch: more may wait.
                Ok(n) if n as i64 == BATCH => {
                    failures = 0;
                    Instant::now()
                }
                // Nothing to send: scan again when the first claim left by another relay runs out.
                Ok(0) => {
                    failures = 0;
                    let pause = match relay.next_due().await {
                        Ok(Some(due)) => due.clamp(MIN_PAUSE, idle),
                        Ok(None) => idle,
                        Err(err) => {
                            tracing::warn!(error = %err, "outbox relay could not look for claimed rows");
                            idle
                        }
                    };
                    Instant::now() + pause
                }
                Ok(_) => {
                    failures = 0;
                    Instant::now() + idle
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    warn_failure(&err, failures);
                    Instant::now() + retry_after(failures)
                }
            };
            if scan_at <= Instant::now() {
                continue;
            }
        }
        let flush_at = relay.flush_at();
        tokio::select! {
            _ = handoff.notify.notified(), if failures == 0 => {}
            _ = tokio::time::sleep_until(scan_at.into()) => {}
            _ = tokio::time::sleep_until(flush_at.unwrap_or(scan_at).into()), if flush_at.is_some() => {
                if let Err(err) = relay.flush().await {
                    tracing::warn!(error = %err, "outbox relay could not delete what it published; will retry");
                }
            }
            _ = stop.changed() => {
                // Rows handed meanwhile are sent by the last pass (their claim is this relay's).
                let handed = handoff.take();
                if !handed.is_empty() && let Err(err) = relay.send(handed).await {
                    tracing::warn!(error = %err, "outbox relay could not send handed rows at shutdown; their claim runs out");
                }
                finish(&mut relay).await;
                return;
            }
        }
    }
}

fn warn_failure(err: &anyhow::Error, failures: u32) {
    if failures == 1 || failures.is_power_of_two() {
        tracing::warn!(error = %err, failures, "outbox relay failed; will retry");
    }
}

fn retry_after(failures: u32) -> Duration {
    Duration::from_millis(100 * u64::from(failures.min(20)))
}

/// One last pass, so a clean shutdown leaves nothing behind (what it cannot send stays for the next start).
async fn finish(relay: &mut Relay) {
    let last = async {
        let n = relay.pass().await?;
        relay.flush().await?;
        anyhow::Ok(n)
    };
    match last.await {
        Ok(n) => tracing::debug!(published = n, "outbox flushed at shutdown"),
        Err(err) => tracing::warn!(error = %err, "outbox not flushed at shutdown; rows stay for the next start"),
    }
}

/// One relay. What it published it deletes in its next pass's claim statement (one round trip for both),
/// or together shortly after ([`Relay::flush`]); what it could not delete (the database went away in
/// between) it deletes then too, rather than leaving those rows claimed to be sent again when the claim
/// runs out.
#[derive(Debug)]
pub struct Relay {
    pool: PgPool,
    publisher: Arc<Publisher>,
    published: Vec<i64>,
    /// When the oldest of `published` was sent.
    published_at: Option<Instant>,
}

impl Relay {
    /// A relay of `pool`'s outbox.
    pub fn new(pool: PgPool, publisher: Arc<Publisher>) -> Self {
        Self { pool, publisher, published: Vec::new(), published_at: None }
    }

    /// How long until the first row waiting to be sent is due (a claim of another relay runs out), or
    /// `None` when none waits.
    pub async fn next_due(&self) -> sqlx::Result<Option<Duration>> {
        let secs = sqlx::query_scalar!(
            "SELECT EXTRACT(EPOCH FROM min(coalesce(claimed_until, now())) - now())::float8
             FROM outbox WHERE parked_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(ordermesh_lifecycle::due_in_secs(secs))
    }

    /// When the rows it published should be deleted, if any wait.
    pub fn flush_at(&self) -> Option<Instant> {
        self.published_at.map(|at| at + FLUSH_AFTER)
    }

    /// Deletes the rows it published.
    pub async fn flush(&mut self) -> sqlx::Result<()> {
        if !self.published.is_empty() {
            sqlx::query!("DELETE FROM outbox WHERE id = ANY($1)", &self.published).execute(&self.pool).await?;
            self.published.clear();
        }
        self.published_at = None;
        Ok(())
    }

    /// Deletes what it published before and publishes up to one batch; returns how many rows it took care
    /// of (sent or parked). The rows it sends stay until the next pass or [`Relay::flush`] deletes them.
    pub async fn pass(&mut self) -> anyhow::Result<usize> {
        let done = std::mem::take(&mut self.published);
        // SKIP LOCKED lets several relays claim side by side without taking the same row. The rows deleted
        // here are still claimed by this relay, so the claim cannot take them again.
        let claimed = sqlx::query!(
            "WITH done AS (DELETE FROM outbox WHERE id = ANY($2))
             UPDATE outbox o SET claimed_until = now() + make_interval(secs => $3)
             FROM (SELECT id FROM outbox
                   WHERE parked_at IS NULL AND (claimed_until IS NULL OR claimed_until < now())
                   ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) c
             WHERE o.id = c.id
             RETURNING o.id, o.exchange, o.routing_key, o.body",
            BATCH,
            &done,
            HANDED_CLAIM_SECS
        )
        .fetch_all(&self.pool)
        .await;
        let mut rows: Vec<Row> = match claimed {
            Ok(rows) => rows.into_iter().map(|r| (r.id, r.exchange, r.routing_key, r.body)).collect(),
            Err(err) => {
                self.published = done;
                return Err(err.into());
            }
        };
        self.published_at = None;
        rows.sort_by_key(|r| r.0);
        self.send(rows).await
    }

    /// Publishes rows this relay holds the claim of (claimed by a pass, or handed over by their writer);
    /// returns how many it took care of (sent or parked). On failure their claim is given back, so the next
    /// scan (here or elsewhere) need not wait for it to run out.
    pub async fn send(&mut self, rows: Vec<Row>) -> anyhow::Result<usize> {
        if rows.is_empty() {
            return Ok(0);
        }
        let handled = rows.len();
        let mut ids = Vec::with_capacity(rows.len());
        let mut messages = Vec::with_capacity(rows.len());
        for (id, exchange, routing_key, body) in rows {
            // Only the head is read: the stored bytes go out as they are, not decoded and encoded again.
            match EnvelopeHead::from_slice(&body) {
                Ok(head) => {
                    ids.push(id);
                    messages.push(Stored { exchange, routing_key, head, body });
                }
                Err(reason) => {
                    tracing::error!(outbox_id = id, %reason, "outbox row cannot be decoded; parked for the audit");
                    sqlx::query!("UPDATE outbox SET parked_at = now(), parked_reason = $2 WHERE id = $1", id, &reason)
                        .execute(&self.pool)
                        .await?;
                }
            }
        }
        if let Err(err) = self.publisher.publish_stored(&messages).await {
            let _ = sqlx::query!("UPDATE outbox SET claimed_until = NULL WHERE id = ANY($1)", &ids)
                .execute(&self.pool)
                .await;
            return Err(err.into());
        }
        if !ids.is_empty() {
            self.published_at.get_or_insert_with(Instant::now);
            self.published.extend(ids);
        }
        Ok(handled)
    }
}

/// One pass of a fresh relay, its published rows deleted (tools and tests).
pub async fn relay_batch(pool: &PgPool, publisher: &Arc<Publisher>) -> anyhow::Result<usize> {
    let mut relay = Relay::new(pool.clone(), publisher.clone());
    let n = relay.pass().await?;
    relay.flush().await?;
    Ok(n)
}

/// Samples the outbox's backlog (rows not yet published, parked ones included) and the age of its oldest
/// row into `metrics` at each scrape: one indexed query per scrape, none when nobody looks.
pub fn watch_backlog(metrics: &ordermesh_telemetry::Metrics, pool: &PgPool) {
    let (metrics, pool) = (metrics.clone(), pool.clone());
    metrics.clone().add_sampler(move || {
        let (metrics, pool) = (metrics.clone(), pool.clone());
        async move {
            let row = sqlx::query!(
                r#"SELECT count(*) AS "backlog!", EXTRACT(EPOCH FROM now() - min(created_at))::float8 AS oldest
                   FROM outbox"#
            )
            .fetch_one(&pool)
            .await;
            match row {
                Ok(row) => {
                    let f = metrics.families();
                    metrics.set(&f.outbox_backlog, row.backlog);
                    metrics.set_f64(&f.outbox_oldest_seconds, row.oldest.unwrap_or(0.0));
                }
                Err(e) => tracing::warn!(error = %e, "sampling the outbox backlog failed"),
            }
        }
    });
}
