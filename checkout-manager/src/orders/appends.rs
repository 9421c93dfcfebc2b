//! What a write of an order adds beside the order row (timeline entries, status events, outbox messages,
//! refunds owed), gathered as arrays so that the whole write is one statement, and that statement's tail.

use chrono::{DateTime, SubsecRound, Utc};
use ordermesh_bus::{Topology, outbox};
use ordermesh_messages::{
    Envelope, kinds,
    payloads::{OrderEvent, OrderLine, RefundRequest, TimelineEntry},
};

use super::{Change, Entry, Order, Result};

/// What a write adds beside the order row: timeline entries and outbox messages. They travel as arrays,
/// so the whole write is one statement: atomic on its own, without BEGIN and COMMIT round trips.
#[derive(Debug, Default)]
pub(super) struct Appends {
    steps: Vec<String>,
    outcomes: Vec<String>,
    details: Vec<String>,
    ats: Vec<DateTime<Utc>>,
    exchanges: Vec<String>,
    routing_keys: Vec<String>,
    message_ids: Vec<uuid::Uuid>,
    bodies: Vec<Vec<u8>>,
    /// The payment ids of the refunds asked for: owed until the provider acknowledges them.
    refunds: Vec<String>,
}

impl Appends {
    /// A timeline entry; returns it as shown, timed now (in microseconds, as it is stored, so an event carries
    /// exactly what a later read shows).
    pub(super) fn step(&mut self, entry: &Entry) -> TimelineEntry {
        let at = Utc::now().trunc_subsecs(6);
        let (step, outcome) = (entry.stage.as_str(), entry.outcome.as_str());
        self.steps.push(step.to_owned());
        self.outcomes.push(outcome.to_owned());
        self.details.push(entry.detail.clone());
        self.ats.push(at);
        TimelineEntry { step: step.to_owned(), outcome: outcome.to_owned(), detail: entry.detail.clone(), at }
    }

    pub(super) fn message(&mut self, exchange: &str, routing_key: &str, envelope: &Envelope) {
        if envelope.kind == kinds::PAYMENT_REFUND
            && let Ok(refund) = envelope.payload::<RefundRequest>()
        {
            self.refunds.push(refund.payment_id);
        }
        self.exchanges.push(exchange.to_owned());
        self.routing_keys.push(routing_key.to_owned());
        self.message_ids.push(envelope.message_id);
        self.bodies.push(envelope.to_vec_traced(ordermesh_telemetry::trace::traceparent()));
    }

    /// Every change's messages, timeline entry and (if its status moved) status event; returns the order as
    /// the last one leaves it and the time of the last entry (`since` if there are none).
    pub(super) fn changes(
        &mut self,
        topology: &Topology,
        mut next: Order,
        changes: Vec<Change>,
        since: DateTime<Utc>,
    ) -> Result<(Order, DateTime<Utc>)> {
        let mut last_at = since;
        for change in changes {
            for m in &change.messages {
                self.message(&m.exchange, &m.routing_key, &m.envelope);
            }
            let entry = self.step(&change.timeline);
            let at = entry.at;
            next.timeline.push(entry);
            let moved = change.status != next.status;
            next = next.after(change);
            if moved {
                self.status(topology, &next, at)?;
            }
            last_at = at;
        }
        Ok((next, last_at))
    }

    /// The status event of `order` as a change that was stored `at` left it. It carries the order's channel
    /// and lines, and a final one its whole timeline, so a subscriber needs no second read.
    pub(super) fn status(&mut self, topology: &Topology, order: &Order, at: DateTime<Utc>) -> Result<()> {
        let status = order.status;
        let event = OrderEvent {
            order_id: order.order_id.clone(),
            client_id: order.client_id.clone(),
            status: status.as_str().to_owned(),
            reason: order.reason.clone(),
            total_cents: order.total_cents,
            at,
            channel: order.channel.clone(),
            lines: order
                .lines
                .iter()
                .map(|l| OrderLine {
                    product_id: l.product_id.clone(),
                    quantity: l.quantity,
                    unit_price_cents: l.unit_price_cents,
                })
                .collect(),
            created_at: status.is_final().then_some(order.created_at),
            timeline: if status.is_final() { order.timeline.clone() } else { Vec::new() },
        };
        let envelope = Envelope::new(status.event_kind(), &event).correlated(order.order_id.as_str());
        self.message(&topology.order_events(), status.event_kind(), &envelope);
        Ok(())
    }

    /// Binds the arrays as the parameters [`appends_sql`] names.
    pub(super) fn bind<'q, O>(
        &'q self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        query
            .bind(&self.steps)
            .bind(&self.outcomes)
            .bind(&self.details)
            .bind(&self.ats)
            .bind(&self.exchanges)
            .bind(&self.routing_keys)
            .bind(&self.message_ids)
            .bind(&self.bodies)
            .bind(&self.refunds)
    }

    /// The outbox rows as the relay sends them, given the ids the statement returned ([`HANDED_IDS`]).
    pub(super) fn handed(self, ids: Vec<i64>, message_ids: Vec<uuid::Uuid>) -> Vec<outbox::Row> {
        let by_message: std::collections::HashMap<uuid::Uuid, i64> = message_ids.into_iter().zip(ids).collect();
        let mut rows: Vec<outbox::Row> = self
            .message_ids
            .iter()
            .zip(self.exchanges)
            .zip(self.routing_keys)
            .zip(self.bodies)
            .filter_map(|(((m, e), r), b)| by_message.get(m).map(|id| (*id, e, r, b)))
            .collect();
        rows.sort_by_key(|r| r.0);
        rows
    }
}

/// The statement's tail that writes the appends of the order row(s) `o` wrote: `$base`..`$base+8`. Its
/// outbox rows are claimed for this instance's relay, to be handed to it after the commit ([`HANDED_IDS`]
/// gives their ids); the refunds it asks for are recorded as owed ([`refunds`](crate::refunds)).
pub(super) fn appends_sql(base: usize) -> String {
    let p = |i: usize| format!("${}", base + i);
    format!(
        "steps AS (
           INSERT INTO order_steps (order_id, step, outcome, detail, at)
           SELECT o.order_id, s.step, s.outcome, s.detail, s.at
           FROM o, UNNEST({}::text[], {}::text[], {}::text[], {}::timestamptz[]) WITH ORDINALITY AS s(step, outcome, detail, at, n)
           ORDER BY s.n
         ), box AS (
           INSERT INTO outbox (exchange, routing_key, message_id, body, claimed_until)
           SELECT m.exchange, m.routing_key, m.message_id, m.body, {}
           FROM o, UNNEST({}::text[], {}::text[], {}::uuid[], {}::bytea[]) WITH ORDINALITY AS m(exchange, routing_key, message_id, body, n)
           ORDER BY m.n
           RETURNING id, message_id
         ), owed AS (
           INSERT INTO refunds_owed (payment_id, order_id, due_at)
           SELECT r.payment_id, o.order_id, now() + {}
           FROM o, UNNEST({}::text[]) AS r(payment_id)
           ON CONFLICT (payment_id) DO UPDATE SET asked = refunds_owed.asked + 1, due_at = EXCLUDED.due_at
         )",
        p(0),
        p(1),
        p(2),
        p(3),
        outbox::HANDED_CLAIM,
        p(4),
        p(5),
        p(6),
        p(7),
        crate::refunds::ASK_AGAIN_AFTER,
        p(8)
    )
}

/// The outbox ids and message ids [`appends_sql`] wrote, as two columns of the statement's result.
pub(super) const HANDED_IDS: &str =
    "ARRAY(SELECT id FROM box) AS box_ids, ARRAY(SELECT message_id FROM box) AS box_messages";
