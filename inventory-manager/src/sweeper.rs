//! The background task that releases reservations whose time ran out.
//!
//! It sleeps until the first held reservation expires (at most `idle`), not on a fixed tick: an idle
//! inventory costs one query per `idle`. A reservation that expires before the planned wake brings it
//! forward through the [`Alarm`] the reserve path shares with the sweeper.

use std::{sync::Arc, time::Duration};

use ordermesh_lifecycle::Alarm;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::{error::InventoryError, metrics::StockMetrics, store};

/// Most reservations released in one transaction: bounds how long stock rows stay locked.
const BATCH: u32 = 500;

/// Sweeps until `stop` changes; a failed sweep is logged and tried again after `idle` (at most 1 s).
pub async fn run(
    pool: PgPool,
    alarm: Arc<Alarm>,
    idle: Duration,
    metrics: StockMetrics,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        alarm.looking();
        let pause = match sweep(&pool, &metrics).await {
            Ok(next) => next.map_or(idle, |due| due.min(idle)),
            Err(err) => {
                tracing::warn!(error = %err, "sweeping expired reservations failed");
                idle.min(Duration::from_secs(1))
            }
        };
        tokio::select! {
            _ = alarm.sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Releases what has expired, in batches, and says how long until the next held reservation expires.
async fn sweep(pool: &PgPool, metrics: &StockMetrics) -> Result<Option<Duration>, InventoryError> {
    loop {
        let expired = store::expire_due(pool, BATCH).await?;
        metrics.events("expired", u64::try_from(expired).unwrap_or(0));
        if expired < BATCH as usize {
            break;
        }
    }
    store::next_expiry(pool).await
}
