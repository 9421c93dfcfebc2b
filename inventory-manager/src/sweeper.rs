//! The background task that releases reservations whose time ran out.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::store;

/// Most reservations released in one transaction: bounds how long stock rows stay locked.
const BATCH: u32 = 500;

/// Sweeps every `interval` until `stop` changes; a failed sweep is logged and tried again next tick.
pub async fn run(pool: PgPool, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        // Drain a backlog in batches without waiting for the next tick.
        loop {
            match store::expire_due(&pool, BATCH).await {
                Ok(n) if n == BATCH as usize => continue,
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "sweeping expired reservations failed");
                    break;
                }
            }
        }
    }
}
