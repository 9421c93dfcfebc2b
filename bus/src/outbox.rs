//! The transactional outbox: a service writes the message in the same transaction as its state
//! change, and the relay publishes it (with confirms) and then deletes it.
//!
//! A crash before the commit loses both, a crash after it loses neither; a crash between publish
//! and delete publishes twice, which consumers absorb by being idempotent. Every service that uses
//! it has the same `outbox` table in its own database (see its migrations).

use std::{sync::Arc, time::Duration};

use lapin::types::FieldTable;
use ordermesh_messages::Envelope;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Notify, watch};

use crate::publisher::{Outgoing, Publisher};

/// Most messages one relay transaction publishes.
const BATCH: i64 = 200;

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
        .bind(envelope.to_vec())
        .execute(conn)
        .await?;
    Ok(())
}

/// Publishes what the outbox holds: at once when `wake` is notified, and every `poll` anyway
/// (for rows written by another instance, or left by a crash).
pub async fn run_relay(
    pool: PgPool,
    publisher: Arc<Publisher>,
    wake: Arc<Notify>,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        match relay_batch(&pool, &publisher).await {
            Ok(n) if n as i64 == BATCH => {
                failures = 0;
                continue;
            }
            Ok(_) => failures = 0,
            Err(err) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(error = %err, failures, "outbox relay failed; will retry");
                }
            }
        }
        let pause = if failures == 0 { poll } else { Duration::from_millis(100 * u64::from(failures.min(20))) };
        tokio::select! {
            _ = wake.notified(), if failures == 0 => {}
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {
                // One last pass so a clean shutdown leaves nothing behind.
                let _ = relay_batch(&pool, &publisher).await;
                return;
            }
        }
    }
}

/// Publishes up to one batch; returns how many went out.
pub async fn relay_batch(pool: &PgPool, publisher: &Publisher) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    // SKIP LOCKED lets several instances relay side by side without sending a row twice.
    let rows: Vec<(i64, String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT id, exchange, routing_key, body FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut messages = Vec::with_capacity(rows.len());
    for (id, exchange, routing_key, body) in rows {
        ids.push(id);
        let envelope = Envelope::from_slice(&body).map_err(anyhow::Error::msg)?;
        messages.push(Outgoing { exchange, routing_key, envelope, headers: FieldTable::default() });
    }
    publisher.publish_all(&messages).await?;
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(&ids).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(ids.len())
}
