//! The saga driver: claims orders whose next step is due and advances them, a few at a time.
//!
//! New orders and payment results wake it at once; otherwise it sleeps until the first order falls due
//! (a retry whose backoff ends, a payment timeout, an order whose driver died and whose lease runs out),
//! and at most `idle`. A heartbeat renews the lease of every order in hand, so leases can be short and
//! a dead driver's orders are soon resumed.

use std::time::Duration;

use tokio::{sync::watch, task::JoinSet};
use tracing::Instrument;

use crate::saga::Saga;

/// Runs until `stop` turns true; finishes the orders in hand before returning.
pub async fn run(saga: Saga, idle: Duration, mut stop: watch::Receiver<bool>) {
    // Dropped with this future, also if the driver panics: a dead driver must stop renewing its leases.
    let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat(saga.clone())));
    drive(&saga, idle, &mut stop).await;
}

/// The shortest sleep when an order is due but was not claimable (another driver holds its row).
const MIN_PAUSE: Duration = Duration::from_millis(20);

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
        let held = saga.leases.snapshot(saga.settings.step_timeout);
        if let Err(e) = crate::orders::renew_leases(&saga.pool, &held, saga.settings.lease).await {
            tracing::warn!(error = %e, orders = held.len(), "renewing leases failed");
        }
    }
}

/// Claims as many due orders as there are free slots and advances each in a task of its own, so a
/// slow order never holds up the next claim.
async fn drive(saga: &Saga, idle: Duration, stop: &mut watch::Receiver<bool>) {
    let slots = saga.settings.concurrency;
    let mut running = JoinSet::new();
    loop {
        if *stop.borrow() {
            while running.join_next().await.is_some() {}
            return;
        }
        // Reap finished tasks so `running.len()` counts only live ones.
        while running.try_join_next().is_some() {}
        let free = slots.saturating_sub(running.len());
        if free == 0 {
            tokio::select! {
                _ = running.join_next() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        saga.driver_alarm.looking();
        let mut pause = idle;
        match crate::orders::claim_due(&saga.pool, free as i64, saga.settings.lease).await {
            Ok(orders) => {
                let claimed = orders.len();
                for order in orders {
                    saga.leases.hold(order.order_id.as_str(), order.version);
                    let saga = saga.clone();
                    // A step the driver takes up later (a retry, a payment timeout) starts a trace of its own;
                    // its log lines carry that trace and the order.
                    let span = tracing::info_span!(
                        "saga",
                        service = "checkout-manager",
                        order_id = %order.order_id,
                        trace_id = tracing::field::Empty,
                    );
                    ordermesh_telemetry::trace::continue_trace(&span, None);
                    running.spawn(
                        async move {
                            let id = order.order_id.clone();
                            if let Err(e) = saga.advance(order).await {
                                // The lease runs out and the step is tried again.
                                tracing::warn!(order_id = %id, error = %e, "saga step failed");
                            }
                        }
                        .instrument(span),
                    );
                }
                if claimed == free {
                    continue;
                }
                // Nothing else is due now: sleep until something is, unless woken first.
                match crate::orders::next_due(&saga.pool).await {
                    Ok(Some(due)) => pause = due.clamp(MIN_PAUSE, idle),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "looking for the next due order failed"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming due orders failed");
                pause = idle.min(Duration::from_secs(1));
            }
        }
        tokio::select! {
            _ = saga.driver_alarm.sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}
