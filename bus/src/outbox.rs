//! The transactional outbox: a service writes the message in the same transaction as its state
//! change, and the relay publishes it (with confirms) and then deletes it.
//!
//! A crash before the commit loses both, a crash after it loses neither; a crash between publish
//! and delete publishes twice, which consumers absorb by being idempotent. Every service that uses
//! it has the same `outbox` table in its own database (see its migrations).
//!
//! The relay claims rows with a lease in one short statement, so no row lock or pooled connection is
//! held while it waits for the broker; a relay that dies leaves its claim to run out. A row that does
//! not decode is parked (`parked_at`, `parked_reason`) for the audit instead of blocking the rest.

use std::{sync::Arc, time::Duration};

use lapin::types::FieldTable;
use ordermesh_messages::Envelope;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Notify, watch};

use crate::publisher::{Outgoing, Publisher};

/// Most messages one relay pass publishes.
const BATCH: i64 = 200;
/// How long a claimed row is left to its relay before another may publish it: above the publish
/// deadline (5 s), and short, because a relay killed mid-publish leaves its rows claimed this long.
const CLAIM_SECS: f64 = 8.0;
/// How long published rows wait for the next pass to delete them in its claim statement (one round trip
/// for both) before they are deleted alone: under load the next write comes sooner, and this is far below
/// the claim, so they are never sent twice by waiting.
const FLUSH_AFTER: Duration = Duration::from_millis(10);
/// The shortest sleep between passes when a row is due but was not claimable (another relay's claim
/// statement held it): keeps two relays from spinning on each other.
const MIN_PAUSE: Duration = Duration::from_millis(20);

/// Adds a message to the outbox inside the caller's transaction.
pub async fn enqueue(
    conn: &mut PgConnection,
    exchange: &str,
    routing_key: &str,
    envelope: &Envelope,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO outbox (exchange, routing_key, message_id, body) VALUES ($1, $2, $3, $4)")
        .bind(exchange)
        .bind(routing_key)
        .bind(envelope.message_id)
        .bind(envelope.to_vec_traced(ordermesh_telemetry::trace::traceparent()))
        .execute(conn)
        .await?;
    Ok(())
}

/// Publishes what the outbox holds: at once when `wake` is notified (by the transaction that wrote
/// the rows), when a row claimed by a relay that died falls due, and every `idle` anyway (for rows
/// written by an instance that died before its relay ran). An idle relay costs one query per `idle`.
pub async fn run_relay(
    pool: PgPool,
    publisher: Arc<Publisher>,
    wake: Arc<Notify>,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut relay = Relay::new(pool, publisher);
    let mut failures = 0u32;
    loop {
        let pause = match relay.pass().await {
            Ok(n) if n as i64 == BATCH => {
                failures = 0;
                continue;
            }
            // Nothing to send: sleep until the first claim left by another relay runs out.
            Ok(0) => {
                failures = 0;
                match relay.next_due().await {
                    Ok(Some(due)) => due.clamp(MIN_PAUSE, idle),
                    Ok(None) => idle,
                    Err(err) => {
                        tracing::warn!(error = %err, "outbox relay could not look for claimed rows");
                        idle
                    }
                }
            }
            // Under load the next write wakes the relay; each pass also takes rows whose claim ran out.
            Ok(_) => {
                failures = 0;
                idle
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(error = %err, failures, "outbox relay failed; will retry");
                }
                Duration::from_millis(100 * u64::from(failures.min(20)))
            }
        };
        if failures == 0 && relay.holds_published() {
            tokio::select! {
                _ = wake.notified() => continue,
                _ = tokio::time::sleep(FLUSH_AFTER) => {
                    if let Err(err) = relay.flush().await {
                        tracing::warn!(error = %err, "outbox relay could not delete what it published; will retry");
                    }
                }
                _ = stop.changed() => {
                    finish(&mut relay).await;
                    return;
                }
            }
        }
        tokio::select! {
            _ = wake.notified(), if failures == 0 => {}
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {
                finish(&mut relay).await;
                return;
            }
        }
    }
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
/// or alone when no pass follows soon ([`Relay::flush`]); what it could not delete (the database went away
/// in between) it deletes then too, rather than leaving those rows claimed to be sent again when the claim
/// runs out.
#[derive(Debug)]
pub struct Relay {
    pool: PgPool,
    publisher: Arc<Publisher>,
    published: Vec<i64>,
}

impl Relay {
    /// A relay of `pool`'s outbox.
    pub fn new(pool: PgPool, publisher: Arc<Publisher>) -> Self {
        Self { pool, publisher, published: Vec::new() }
    }

    /// How long until the first row waiting to be sent is due (a claim of another relay runs out), or
    /// `None` when none waits.
    pub async fn next_due(&self) -> sqlx::Result<Option<Duration>> {
        let secs: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM min(coalesce(claimed_until, now())) - now())::float8
             FROM outbox WHERE parked_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(ordermesh_lifecycle::due_in_secs(secs))
    }

    /// Whether rows it published wait to be deleted.
    pub fn holds_published(&self) -> bool {
        !self.published.is_empty()
    }

    /// Deletes the rows it published.
    pub async fn flush(&mut self) -> sqlx::Result<()> {
        if !self.published.is_empty() {
            sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(&self.published).execute(&self.pool).await?;
            self.published.clear();
        }
        Ok(())
    }

    /// Deletes what it published before and publishes up to one batch; returns how many rows it took care
    /// of (sent or parked). The rows it sends stay until the next pass or [`Relay::flush`] deletes them.
    pub async fn pass(&mut self) -> anyhow::Result<usize> {
        let done = std::mem::take(&mut self.published);
        // SKIP LOCKED lets several relays claim side by side without taking the same row. The rows deleted
        // here are still claimed by this relay, so the claim cannot take them again.
        let claimed = sqlx::query_as(
            "WITH done AS (DELETE FROM outbox WHERE id = ANY($3))
             UPDATE outbox o SET claimed_until = now() + make_interval(secs => $2)
             FROM (SELECT id FROM outbox
                   WHERE parked_at IS NULL AND (claimed_until IS NULL OR claimed_until < now())
                   ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) c
             WHERE o.id = c.id
             RETURNING o.id, o.exchange, o.routing_key, o.body",
        )
        .bind(BATCH)
        .bind(CLAIM_SECS)
        .bind(&done)
        .fetch_all(&self.pool)
        .await;
        let mut rows: Vec<(i64, String, String, Vec<u8>)> = match claimed {
            Ok(rows) => rows,
            Err(err) => {
                self.published = done;
                return Err(err.into());
            }
        };
        if rows.is_empty() {
            return Ok(0);
        }
        rows.sort_by_key(|r| r.0);
        let handled = rows.len();
        let mut ids = Vec::with_capacity(rows.len());
        let mut messages = Vec::with_capacity(rows.len());
        for (id, exchange, routing_key, body) in rows {
            match Envelope::from_slice(&body) {
                Ok(envelope) => {
                    ids.push(id);
                    messages.push(Outgoing { exchange, routing_key, envelope, headers: FieldTable::default() });
                }
                Err(reason) => {
                    tracing::error!(outbox_id = id, %reason, "outbox row cannot be decoded; parked for the audit");
                    sqlx::query("UPDATE outbox SET parked_at = now(), parked_reason = $2 WHERE id = $1")
                        .bind(id)
                        .bind(&reason)
                        .execute(&self.pool)
                        .await?;
                }
            }
        }
        if let Err(err) = self.publisher.publish_all(&messages).await {
            // Give the claim back so the next pass (here or elsewhere) need not wait for it to run out.
            let _ = sqlx::query("UPDATE outbox SET claimed_until = NULL WHERE id = ANY($1)")
                .bind(&ids)
                .execute(&self.pool)
                .await;
            return Err(err.into());
        }
        self.published = ids;
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
            let row: sqlx::Result<(i64, Option<f64>)> =
                sqlx::query_as("SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM outbox")
                    .fetch_one(&pool)
                    .await;
            match row {
                Ok((backlog, oldest)) => {
                    let f = metrics.families();
                    metrics.set(&f.outbox_backlog, backlog);
                    metrics.set_f64(&f.outbox_oldest_seconds, oldest.unwrap_or(0.0));
                }
                Err(e) => tracing::warn!(error = %e, "sampling the outbox backlog failed"),
            }
        }
    });
}
