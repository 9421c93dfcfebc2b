//! The saga driver: claims orders whose next step is due and advances them, a few at a time.
//!
//! New orders and payment results wake it at once; the poll finds retries whose backoff ended,
//! payment timeouts, and orders whose previous driver died (their lease ran out). A heartbeat renews
//! the lease of every order in hand, so leases can be short and a dead driver's orders are soon resumed.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use crate::saga::Saga;

/// Runs until `stop` turns true; finishes the orders in hand before returning.
pub async fn run(saga: Saga, poll: Duration, mut stop: watch::Receiver<bool>) {
    let batch = i64::try_from(saga.settings.concurrency.saturating_mul(2)).unwrap_or(64);
    // Dropped with this future, also if the driver panics: a dead driver must stop renewing its leases.
    let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat(saga.clone())));
    drive(&saga, batch, poll, &mut stop).await;
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews the leases of the orders in hand every third of a lease.
async fn heartbeat(saga: Saga) {
    let every = saga.settings.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let held = saga.leases.snapshot();
        if let Err(e) = crate::orders::renew_leases(&saga.pool, &held, saga.settings.lease).await {
            tracing::warn!(error = %e, orders = held.len(), "renewing leases failed");
        }
    }
}

async fn drive(saga: &Saga, batch: i64, poll: Duration, stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        match crate::orders::claim_due(&saga.pool, batch, saga.settings.lease).await {
            Ok(orders) if !orders.is_empty() => {
                let claimed = orders.len();
                // Claimed orders wait for a free slot below: their leases are renewed from now on, not from
                // when their turn comes.
                for order in &orders {
                    saga.leases.hold(&order.order_id, order.version);
                }
                futures::stream::iter(orders)
                    .for_each_concurrent(saga.settings.concurrency, |order| {
                        async move {
                            let id = order.order_id.clone();
                            if let Err(e) = saga.advance(order).await {
                                // The lease runs out and the step is tried again.
                                tracing::warn!(order_id = %id, error = %e, "saga step failed");
                            }
                        }
                    })
                    .await;
                if claimed as i64 == batch {
                    continue;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "claiming due orders failed"),
        }
        tokio::select! {
            _ = saga.driver_wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => {}
        }
    }
}
