//! The hand-over of each checkout's order to checkout-manager, made sure of end to end.
//!
//! `order.place` leaves through the outbox, which survives a crash of this service. But the broker can lose
//! a message it confirmed: RabbitMQ's quorum queues before 4.2 do that to a publisher whose channel lost sight
//! of the queue's leader in a partition (rabbitmq-server#14589), and the fault suite's partition scenario found
//! checkouts answered 202 whose order had not arrived 15 s after the heal. So each checkout stays
//! "not yet handed over" (`checkouts.handover_due_at`) until checkout-manager says it holds the order
//! (`order.taken_in`, asked for many orders at once); an order it does not hold is sent again. Taking an
//! order in twice changes nothing at checkout-manager, so sending again is always safe.

use std::{sync::Arc, time::Duration};

use ordermesh_bus::{RpcClient, Topology, outbox::Handoff};
use ordermesh_lifecycle::Alarm;
use ordermesh_messages::{
    Envelope, OrderId, ReplyError, kinds,
    payloads::{PlaceOrder, TakenIn, WhichTakenIn},
};
use sqlx::PgPool;
use tokio::sync::watch;

/// How long after its checkout an order is first asked about: the default of `checkouts.handover_due_at` in
/// the migration that made it, which this must match.
pub const FIRST_CHECK_AFTER: Duration = Duration::from_secs(5);
/// How long after a question its orders are asked about again if no answer settles them.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(10);
/// How long checkout-manager gets to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// Bounds of the sleep between passes: the shortest gathers a busy second's checkouts into one question;
/// the longest is what an idle service spends (one query), as a new checkout wakes the check (`alarm`).
const MIN_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(60);
/// The pause after a failed pass.
const RETRY_PAUSE: Duration = Duration::from_secs(5);

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Orders checkout-manager holds: settled.
    pub taken_in: usize,
    /// Orders it did not hold: `order.place` sent again.
    pub sent_again: usize,
}

/// Asks checkout-manager about the checkouts whose hand-over is due (claimed first, so two instances never
/// ask about the same ones together), settles those it holds and sends the others again.
pub async fn check(pool: &PgPool, rpc: &RpcClient, topology: &Topology, outbox: &Handoff) -> anyhow::Result<Checked> {
    let due: Vec<(String, serde_json::Value)> = sqlx::query!(
        "UPDATE checkouts c SET handover_due_at = now() + make_interval(secs => $2)
         FROM (SELECT order_id FROM checkouts WHERE handover_due_at <= now()
               ORDER BY handover_due_at LIMIT $1 FOR UPDATE SKIP LOCKED) d
         WHERE c.order_id = d.order_id
         RETURNING c.order_id, c.order_snapshot",
        i64::try_from(WhichTakenIn::MAX).unwrap_or(i64::MAX),
        ASK_AGAIN_AFTER.as_secs_f64(),
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.order_id, r.order_snapshot))
    .collect();
    if due.is_empty() {
        return Ok(Checked::default());
    }
    // A snapshot that does not decode (written by a future version, say) is left for the audit, not allowed to
    // stop the others' hand-over.
    let orders: Vec<PlaceOrder> = due
        .into_iter()
        .filter_map(|(id, snapshot)| {
            serde_json::from_value(snapshot)
                .inspect_err(|e| tracing::error!(order_id = %id, error = %e, "stored order does not decode"))
                .ok()
        })
        .collect();
    if orders.is_empty() {
        return Ok(Checked::default());
    }
    let question = WhichTakenIn { order_ids: orders.iter().map(|o| o.order_id.clone()).collect() };
    let reply = rpc
        .call(&topology.checkout_queries(), Envelope::new(kinds::ORDER_TAKEN_IN, &question), ANSWER_WITHIN)
        .await
        .map_err(|e| anyhow::anyhow!("asking checkout-manager which orders it holds: {e}"))?;
    let answer: Result<TakenIn, ReplyError> = reply.payload().map_err(|e| anyhow::anyhow!("its answer: {e}"))?;
    let held: std::collections::HashSet<OrderId> =
        answer.map_err(|e| anyhow::anyhow!("checkout-manager: {}", e.message))?.order_ids.into_iter().collect();

    let settled: Vec<&str> = held.iter().map(OrderId::as_str).collect();
    sqlx::query!("UPDATE checkouts SET handover_due_at = NULL WHERE order_id = ANY($1)", &settled as &[&str])
        .execute(pool)
        .await?;
    let lost: Vec<&PlaceOrder> = orders.iter().filter(|o| !held.contains(&o.order_id)).collect();
    if !lost.is_empty() {
        let envelopes: Vec<Envelope> =
            lost.iter().map(|o| Envelope::new(kinds::ORDER_PLACE, o).correlated(o.order_id.as_str())).collect();
        ordermesh_bus::outbox::enqueue_all(pool, "", &topology.checkout_jobs(), &envelopes).await?;
        outbox.wake();
        let ids: Vec<&str> = lost.iter().map(|o| o.order_id.as_str()).collect();
        tracing::warn!(orders = ?ids, "checkout-manager does not hold these checked-out orders; order.place sent again");
    }
    Ok(Checked { taken_in: settled.len(), sent_again: lost.len() })
}

/// How long until the first checkout's hand-over is due, if any is not settled.
async fn next_due(pool: &PgPool) -> sqlx::Result<Option<Duration>> {
    let secs = sqlx::query_scalar!(
        "SELECT EXTRACT(EPOCH FROM min(handover_due_at) - now())::float8 FROM checkouts WHERE handover_due_at IS NOT NULL",
    )
    .fetch_one(pool)
    .await?;
    Ok(ordermesh_lifecycle::due_in_secs(secs))
}

/// Makes sure of hand-overs until `stop` turns true.
pub async fn run(
    pool: PgPool,
    rpc: Arc<RpcClient>,
    topology: Topology,
    outbox: Arc<Handoff>,
    alarm: Arc<Alarm>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        alarm.looking();
        let pause = match check(&pool, &rpc, &topology, &outbox).await {
            Ok(_) => {
                failures = 0;
                match next_due(&pool).await {
                    Ok(due) => due.unwrap_or(MAX_PAUSE).clamp(MIN_PAUSE, MAX_PAUSE),
                    Err(_) => MAX_PAUSE,
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(error = %e, failures, "could not make sure of order hand-overs; will retry");
                }
                RETRY_PAUSE
            }
        };
        tokio::select! {
            _ = alarm.sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}
