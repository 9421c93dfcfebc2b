//! Refunds owed: a refund the saga asks for stays owed until the payment provider acknowledges it
//! (`payment.refunded`), and is asked for again each time its due time passes.
//!
//! The outbox already makes a request survive a crash of this service. This makes it survive the broker
//! losing a message it had confirmed: RabbitMQ's quorum queues before 4.2 do that to a publisher whose channel
//! lost sight of the queue's leader in a partition (rabbitmq-server#14589), and the fault suite's partition
//! scenario found a FAILED order's charge kept. The provider books a refund at most once, so asking again is
//! always safe.

use std::{sync::Arc, time::Duration};

use ordermesh_bus::{
    Topology,
    outbox::{self, Handoff},
};
use ordermesh_messages::{Envelope, kinds, payloads::RefundDone, payloads::RefundRequest};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::error::CheckoutError;

/// How long an asked refund waits for its acknowledgement before it is asked again; each further ask waits
/// one more step, up to six.
pub const ASK_AGAIN_AFTER: Duration = Duration::from_secs(10);
/// Most refunds asked again in one pass.
const BATCH: i64 = 100;
/// Bounds of the sleep between passes: the shortest keeps a burst in few statements, the longest is what an
/// idle service spends (one query).
const MIN_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// Forgets a refund the provider acknowledged.
pub async fn acknowledged(pool: &PgPool, done: &RefundDone) -> Result<(), CheckoutError> {
    sqlx::query!("DELETE FROM refunds_owed WHERE payment_id = $1", &done.payment_id).execute(pool).await?;
    Ok(())
}

/// Asks again, through the outbox, for every refund whose acknowledgement is overdue (claimed first, so
/// two instances never ask for the same one together); returns how many.
pub async fn ask_again(pool: &PgPool, topology: &Topology) -> Result<usize, CheckoutError> {
    let due = sqlx::query!(
        "UPDATE refunds_owed r SET asked = r.asked + 1,
                due_at = now() + make_interval(secs => $2::float8 * least(r.asked + 1, 6))
         FROM (SELECT payment_id FROM refunds_owed WHERE due_at <= now()
               ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED) d
         WHERE r.payment_id = d.payment_id
         RETURNING r.payment_id, r.order_id",
        BATCH,
        ASK_AGAIN_AFTER.as_secs_f64()
    )
    .fetch_all(pool)
    .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut envelopes = Vec::with_capacity(due.len());
    for row in &due {
        let order_id = ordermesh_messages::OrderId::parse(&row.order_id)
            .map_err(|e| CheckoutError::Internal(anyhow::anyhow!("stored order id: {e}")))?;
        let request = RefundRequest { payment_id: row.payment_id.clone(), order_id };
        envelopes.push(Envelope::new(kinds::PAYMENT_REFUND, &request).correlated(request.order_id.as_str()));
    }
    outbox::enqueue_all(pool, "", &topology.payment_requests(), &envelopes).await?;
    tracing::warn!(refunds = due.len(), "refunds not acknowledged in time; asked again");
    Ok(due.len())
}

/// How long until the first owed refund is due, if any is owed.
async fn next_due(pool: &PgPool) -> Result<Option<Duration>, CheckoutError> {
    let secs = sqlx::query_scalar!("SELECT EXTRACT(EPOCH FROM min(due_at) - now())::float8 FROM refunds_owed")
        .fetch_one(pool)
        .await?;
    Ok(ordermesh_lifecycle::due_in_secs(secs))
}

/// Asks again for overdue refunds until `stop` turns true.
pub async fn run(pool: PgPool, topology: Topology, outbox: Arc<Handoff>, mut stop: watch::Receiver<bool>) {
    loop {
        let pause = match ask_again(&pool, &topology).await {
            Ok(n) => {
                if n > 0 {
                    outbox.wake();
                }
                match next_due(&pool).await {
                    Ok(due) => due.unwrap_or(MAX_PAUSE).clamp(MIN_PAUSE, MAX_PAUSE),
                    Err(_) => MAX_PAUSE,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "asking again for overdue refunds failed; will retry");
                MAX_PAUSE
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}
