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
    pub(super) steps: Vec<String>,
    pub(super) outcomes: Vec<String>,
    pub(super) details: Vec<String>,
    pub(super) ats: Vec<DateTime<Utc>>,
    pub(super) exchanges: Vec<String>,
    pub(super) routing_keys: Vec<String>,
    pub(super) message_ids: Vec<uuid::Uuid>,
    pub(super) bodies: Vec<Vec<u8>>,
    /// The payment ids of the refunds asked for: owed until the provider acknowledges them.
    pub(super) refunds: Vec<String>,
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

    /// The outbox rows as the relay sends them, given the ids [`write_order!`] returned.
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

/// What [`write_order!`] returns for the order row it wrote: its version, and the ids of the outbox rows it
/// claimed for this instance's relay with their message ids.
pub(super) struct Written {
    pub(super) version: i64,
    pub(super) box_ids: Vec<i64>,
    pub(super) box_messages: Vec<uuid::Uuid>,
}

/// A compile-checked write of an order: `WITH` the caller's CTE `o` (which writes the order row and returns
/// its `order_id` and `version`; its parameters start at `$12`), then the [`Appends`] of the order `o` wrote
/// (`$1`..`$9`, bound from `$appends`). Its outbox rows are claimed for this instance's relay (for
/// [`HANDED_CLAIM_SECS`](outbox::HANDED_CLAIM_SECS), `$10`), to be handed to it after the commit; the refunds
/// it asks for are recorded as owed ([`refunds`](crate::refunds), `$11`). Returns a [`Written`] when `o`
/// wrote a row, none when it did not. A macro, because checked SQL must be literal text.
macro_rules! write_order {
    ($appends:ident, $o:tt, $($args:tt)*) => {
        sqlx::query_as!(
            Written,
            "WITH "
                + $o
                + r#", steps AS (
           INSERT INTO order_steps (order_id, step, outcome, detail, at)
           SELECT o.order_id, s.step, s.outcome, s.detail, s.at
           FROM o, UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[]) WITH ORDINALITY AS s(step, outcome, detail, at, n)
           ORDER BY s.n
         ), box AS (
           INSERT INTO outbox (exchange, routing_key, message_id, body, claimed_until)
           SELECT m.exchange, m.routing_key, m.message_id, m.body, now() + make_interval(secs => $10)
           FROM o, UNNEST($5::text[], $6::text[], $7::uuid[], $8::bytea[]) WITH ORDINALITY AS m(exchange, routing_key, message_id, body, n)
           ORDER BY m.n
           RETURNING id, message_id
         ), owed AS (
           INSERT INTO refunds_owed (payment_id, order_id, due_at)
           SELECT r.payment_id, o.order_id, now() + make_interval(secs => $11)
           FROM o, UNNEST($9::text[]) AS r(payment_id)
           ON CONFLICT (payment_id) DO UPDATE SET asked = refunds_owed.asked + 1, due_at = EXCLUDED.due_at
         )
         SELECT version, ARRAY(SELECT id FROM box) AS "box_ids!", ARRAY(SELECT message_id FROM box) AS "box_messages!"
         FROM o"#,
            &$appends.steps,
            &$appends.outcomes,
            &$appends.details,
            &$appends.ats,
            &$appends.exchanges,
            &$appends.routing_keys,
            &$appends.message_ids,
            &$appends.bodies,
            &$appends.refunds,
            ordermesh_bus::outbox::HANDED_CLAIM_SECS,
            crate::refunds::ASK_AGAIN_AFTER.as_secs_f64(),
            $($args)*
        )
    };
}
