//! Orders on checkout-manager's database: creation, claiming due work, and applying a step's result. The
//! order itself (its status, step, lines and the change a step makes) is plain data, in `domain`.
//!
//! A step's result is written only if the order's `version` is still the one the step started from:
//! nothing is locked while the saga talks to inventory or the payment provider, and a result that
//! lost a race (to a payment result, or to another instance) is simply dropped and the step re-run.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use ordermesh_bus::{Topology, outbox, publisher::Outgoing};
use ordermesh_messages::{
    Channel, ClientId, OrderId, ProductId, kinds,
    payloads::{OrderLine, OrderView, PlaceOrder, RefundRequest, TimelineEntry},
};
use sqlx::PgPool;

use crate::error::CheckoutError;

#[macro_use]
mod appends;
mod domain;
mod reads;

use appends::{Appends, Written};

pub use domain::*;
pub use reads::{taken_in, view};

type Result<T> = std::result::Result<T, CheckoutError>;

/// Stores a new order (status PENDING, reserve due after `lease`) and its `order.created` event, and
/// returns it leased to the caller, who goes on with its first step at once; if the caller dies, the
/// lease runs out and a driver takes the order up. Returns `None` when the order already exists: a
/// redelivered `order.place` changes nothing.
pub async fn place(
    pool: &PgPool,
    topology: &Topology,
    order: &PlaceOrder,
    lease: Duration,
) -> Result<Option<(Order, Vec<outbox::Row>)>> {
    place_after(pool, topology, order, Vec::new(), lease).await
}

/// Stores a new order as `changes` (steps already run, each worked out from the order as the one before
/// it left it, starting from [`pending`]) leave it, with `order.created`, every change's timeline entry,
/// status event and messages, in one statement. Without changes the order is PENDING with its reservation
/// due after `lease`; with them, the last one says when the next step is due. Returns `None` when the order
/// already exists: a redelivered `order.place` changes nothing. The outbox rows come back with the order, to
/// be handed to the relay ([`outbox::Handoff`]).
pub async fn place_after(
    pool: &PgPool,
    topology: &Topology,
    order: &PlaceOrder,
    changes: Vec<Change>,
    lease: Duration,
) -> Result<Option<(Order, Vec<outbox::Row>)>> {
    let products: Vec<&str> = order.lines.iter().map(|l| l.product_id.as_str()).collect();
    let quantities: Vec<i64> = order.lines.iter().map(|l| l.quantity).collect();
    let prices: Vec<i64> = order.lines.iter().map(|l| l.unit_price_cents).collect();
    let due_in = changes.last().map_or(Some(lease), |c| c.next_action_in);
    let delay_ms: Option<i64> = due_in.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut placed = pending(order);
    let mut appends = Appends::default();
    let created = appends.step(&Entry::new(Stage::Created, Outcome::Ok, ""));
    let at = created.at;
    placed.timeline.push(created);
    appends.status(topology, &placed, at)?;
    let (mut placed, last_at) = appends.changes(topology, placed, changes, at)?;
    placed.changed_at = last_at;
    // One statement: the order, its lines, its timeline and its events are stored together or not at all.
    let written = write_order!(
        appends,
        "o AS (
           INSERT INTO orders (order_id, client_id, status, step, total_cents, next_action_at, created_at, updated_at,
                               channel, roll_back_to, refund_due, payment_attempts, step_attempts, reason)
           VALUES ($12, $13, $14, $15, $16,
                   CASE WHEN $17::bigint IS NULL THEN NULL ELSE now() + make_interval(secs => $17::bigint / 1000.0) END,
                   $18, $19, $20, $21, $22, $23, $24, $25)
           ON CONFLICT (order_id) DO NOTHING
           RETURNING order_id, version
         ), lines AS (
           INSERT INTO order_lines (order_id, product_id, quantity, unit_price_cents)
           SELECT o.order_id, l.* FROM o, UNNEST($26::text[], $27::bigint[], $28::bigint[]) AS l
         )",
        order.order_id.as_str(),
        order.client_id.as_str(),
        placed.status.as_str(),
        placed.step.as_str(),
        order.total_cents,
        delay_ms,
        placed.created_at,
        last_at,
        order.channel.as_str(),
        placed.roll_back_to.map(Status::as_str),
        placed.refund_due,
        placed.payment_attempts,
        placed.step_attempts,
        &placed.reason,
        &products as &[&str],
        &quantities,
        &prices,
    )
    .fetch_optional(pool)
    .await?;
    let Some(Written { version, box_ids, box_messages }) = written else {
        return Ok(None);
    };
    placed.version = version;
    Ok(Some((placed, appends.handed(box_ids, box_messages))))
}

/// An order row with its lines and timeline, as [`order_query!`] reads it.
struct OrderWithLines {
    order_id: String,
    client_id: String,
    status: Status,
    step: Step,
    roll_back_to: Option<Status>,
    refund_due: bool,
    total_cents: i64,
    payment_attempts: i32,
    step_attempts: i32,
    reason: String,
    version: i64,
    updated_at: DateTime<Utc>,
    channel: String,
    created_at: DateTime<Utc>,
    products: Vec<String>,
    quantities: Vec<i64>,
    prices: Vec<i64>,
    steps: Vec<String>,
    outcomes: Vec<String>,
    details: Vec<String>,
    ats: Vec<DateTime<Utc>>,
}

/// A compile-checked statement that reads orders whole into [`OrderWithLines`]: `$head` up to its select
/// list, then the saga's columns of `orders o`, its lines as three arrays in the byte order of product ids
/// (the order `place` keeps them in) and its timeline as four arrays, oldest first, then `$tail`. One
/// statement reads an order with its lines and timeline, never a second one. A macro, because checked SQL
/// must be literal text.
macro_rules! order_query {
    ($head:tt, $tail:tt $(, $($args:tt)*)?) => {
        sqlx::query_as!(
            OrderWithLines,
            $head
                + r#" o.order_id, o.client_id, o.status AS "status: Status", o.step AS "step: Step",
                      o.roll_back_to AS "roll_back_to: Status", o.refund_due, o.total_cents, o.payment_attempts,
                      o.step_attempts, o.reason, o.version, o.updated_at, o.channel, o.created_at,
    ARRAY(SELECT product_id FROM order_lines l WHERE l.order_id = o.order_id ORDER BY product_id COLLATE "C") AS "products!",
    ARRAY(SELECT quantity FROM order_lines l WHERE l.order_id = o.order_id ORDER BY product_id COLLATE "C") AS "quantities!",
    ARRAY(SELECT unit_price_cents FROM order_lines l WHERE l.order_id = o.order_id ORDER BY product_id COLLATE "C") AS "prices!",
    ARRAY(SELECT step FROM order_steps s WHERE s.order_id = o.order_id ORDER BY id) AS "steps!",
    ARRAY(SELECT outcome FROM order_steps s WHERE s.order_id = o.order_id ORDER BY id) AS "outcomes!",
    ARRAY(SELECT detail FROM order_steps s WHERE s.order_id = o.order_id ORDER BY id) AS "details!",
    ARRAY(SELECT at FROM order_steps s WHERE s.order_id = o.order_id ORDER BY id) AS "ats!" "#
                + $tail
            $(, $($args)*)?
        )
    };
}

impl OrderWithLines {
    fn into_order(self) -> Result<Order> {
        let lines = self
            .products
            .into_iter()
            .zip(self.quantities)
            .zip(self.prices)
            .map(|((product_id, quantity), unit_price_cents)| {
                Ok(Line { product_id: stored(ProductId::parse(product_id))?, quantity, unit_price_cents })
            })
            .collect::<Result<_>>()?;
        let timeline = self
            .steps
            .into_iter()
            .zip(self.outcomes)
            .zip(self.details)
            .zip(self.ats)
            .map(|(((step, outcome), detail), at)| TimelineEntry { step, outcome, detail, at })
            .collect();
        Ok(Order {
            lines,
            status: self.status,
            step: self.step,
            roll_back_to: self.roll_back_to,
            order_id: stored(OrderId::parse(self.order_id))?,
            client_id: stored(ClientId::parse(self.client_id))?,
            refund_due: self.refund_due,
            total_cents: self.total_cents,
            payment_attempts: self.payment_attempts,
            step_attempts: self.step_attempts,
            reason: self.reason,
            version: self.version,
            changed_at: self.updated_at,
            channel: stored(Channel::parse(self.channel))?,
            created_at: self.created_at,
            timeline,
        })
    }
}

/// A stored value that no longer parses: a bug or a hand edit, never the client's fault.
fn stored<T>(parsed: std::result::Result<T, ordermesh_messages::IdError>) -> Result<T> {
    parsed.map_err(|e| CheckoutError::Internal(anyhow::anyhow!("stored value: {e}")))
}

/// Takes up to `limit` orders whose next step is due, leasing them for `lease` so no other driver
/// takes them meanwhile; if this instance dies, the lease runs out and another picks them up.
pub async fn claim_due(pool: &PgPool, limit: i64, lease: Duration) -> Result<Vec<Order>> {
    let rows = order_query!(
        "UPDATE orders o SET next_action_at = now() + make_interval(secs => $2), version = o.version + 1
         FROM (SELECT order_id FROM orders WHERE next_action_at <= now()
               ORDER BY next_action_at LIMIT $1 FOR UPDATE SKIP LOCKED) due
         WHERE o.order_id = due.order_id
         RETURNING",
        "",
        limit,
        lease.as_secs_f64()
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(OrderWithLines::into_order).collect()
}

/// How long until the first order's next step falls due (a retry's backoff, a payment timeout, a lease
/// of a driver that died), or `None` when every order is final.
pub async fn next_due(pool: &PgPool) -> Result<Option<Duration>> {
    let secs = sqlx::query_scalar!(
        "SELECT EXTRACT(EPOCH FROM min(next_action_at) - now())::float8 FROM orders WHERE next_action_at IS NOT NULL",
    )
    .fetch_one(pool)
    .await?;
    Ok(ordermesh_lifecycle::due_in_secs(secs))
}

/// One order by id, with its lines, in one statement (read on every payment result).
pub async fn load(pool: &PgPool, order_id: &str) -> Result<Option<Order>> {
    let row = order_query!("SELECT", "FROM orders o WHERE o.order_id = $1", order_id).fetch_optional(pool).await?;
    row.map(OrderWithLines::into_order).transpose()
}

/// Writes `change` if the order is still at `order.version`; returns the updated order, or `None` if
/// someone changed it first (the caller then drops its result).
pub async fn apply(
    pool: &PgPool,
    topology: &Topology,
    order: &Order,
    change: Change,
) -> Result<Option<(Order, Vec<outbox::Row>)>> {
    apply_chain(pool, topology, order, vec![change]).await
}

/// Writes `changes`, each worked out from the order as the one before it left it, in one transaction:
/// the order takes the last one's state, and every one keeps its timeline entry, its status event and
/// its messages. Version-guarded like [`apply`]. The outbox rows come back with the order, to be handed to the
/// relay ([`outbox::Handoff`]).
pub async fn apply_chain(
    pool: &PgPool,
    topology: &Topology,
    order: &Order,
    changes: Vec<Change>,
) -> Result<Option<(Order, Vec<outbox::Row>)>> {
    let Some(last) = changes.last() else { return Ok(Some((order.clone(), Vec::new()))) };
    let delay_ms: Option<i64> = last.next_action_in.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let (status, step, roll_back_to, refund_due) = (last.status, last.step, last.roll_back_to, last.refund_due);
    let (payment_attempts, step_attempts, reason) = (last.payment_attempts, last.step_attempts, last.reason.clone());

    let mut appends = Appends::default();
    let (mut next, last_at) = appends.changes(topology, order.clone(), changes, Utc::now().trunc_subsecs(6))?;
    // One statement: the order's new state, its timeline entries, its events and its messages, or nothing.
    let written = write_order!(
        appends,
        "o AS (
           UPDATE orders SET status = $14, step = $15, roll_back_to = $16, refund_due = $17, payment_attempts = $18,
                  step_attempts = $19, reason = $20,
                  next_action_at = CASE WHEN $21::bigint IS NULL THEN NULL
                                        ELSE now() + make_interval(secs => $21::bigint / 1000.0) END,
                  version = version + 1, updated_at = $22
           WHERE order_id = $12 AND version = $13
           RETURNING order_id, version
         )",
        order.order_id.as_str(),
        order.version,
        status.as_str(),
        step.as_str(),
        roll_back_to.map(Status::as_str),
        refund_due,
        payment_attempts,
        step_attempts,
        &reason,
        delay_ms,
        // The time of the last timeline entry, which a final event also carries as the order's `updated_at`.
        last_at,
    )
    .fetch_optional(pool)
    .await?;
    let Some(Written { version, box_ids, box_messages }) = written else {
        tracing::debug!(order_id = %order.order_id, "order changed meanwhile; result dropped");
        return Ok(None);
    };
    next.version = version;
    next.changed_at = last_at;
    if next.status.is_final() {
        tracing::info!(order_id = %order.order_id, status = next.status.as_str(), reason = %next.reason, "order final");
    }
    Ok(Some((next, appends.handed(box_ids, box_messages))))
}

/// Records a refund asked for outside a step (a charge that succeeded after the saga gave up) and
/// queues its request, in one transaction.
pub async fn record_refund(pool: &PgPool, order_id: &str, detail: String, message: &Outgoing) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "INSERT INTO order_steps (order_id, step, outcome, detail) VALUES ($1, 'refund', 'requested', $2)",
        order_id,
        &detail
    )
    .execute(&mut *tx)
    .await?;
    outbox::enqueue(&mut tx, &message.exchange, &message.routing_key, &message.envelope).await?;
    let refund: RefundRequest = message.envelope.payload().map_err(|e| anyhow::anyhow!("refund request: {e}"))?;
    sqlx::query!(
        "INSERT INTO refunds_owed (payment_id, order_id, due_at) VALUES ($1, $2, now() + make_interval(secs => $3))
         ON CONFLICT (payment_id) DO UPDATE SET asked = refunds_owed.asked + 1, due_at = EXCLUDED.due_at",
        &refund.payment_id,
        order_id,
        crate::refunds::ASK_AGAIN_AFTER.as_secs_f64()
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Extends the lease of the orders a driver is working on (at the version it holds), so a live driver
/// keeps them however long a step takes, and a dead one loses them one lease after its last renewal.
pub async fn renew_leases(pool: &PgPool, held: &[(String, i64)], lease: Duration) -> Result<u64> {
    if held.is_empty() {
        return Ok(0);
    }
    let (ids, versions): (Vec<&str>, Vec<i64>) = held.iter().map(|(id, v)| (id.as_str(), *v)).unzip();
    Ok(sqlx::query!(
        "UPDATE orders o SET next_action_at = now() + make_interval(secs => $3)
         FROM UNNEST($1::text[], $2::bigint[]) AS h(order_id, version)
         WHERE o.order_id = h.order_id AND o.version = h.version AND o.next_action_at IS NOT NULL",
        &ids as &[&str],
        &versions,
        lease.as_secs_f64()
    )
    .execute(pool)
    .await?
    .rows_affected())
}
