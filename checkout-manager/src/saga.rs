//! The checkout saga: reserve → pay → commit, or roll back and record why. Every decision about an
//! order's next step is made here, and each step's result is stored before the next step starts.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;

use ordermesh_bus::{Topology, outbox::Handoff, publisher::Outgoing};
use ordermesh_lifecycle::Alarm;
use ordermesh_messages::{
    Envelope, kinds,
    payloads::{ChargeRequest, PaymentOutcome, PaymentResult, PlaceOrder, RefundRequest},
};
use sqlx::PgPool;

pub use crate::leases::Leases;
use crate::{
    config::SagaSettings,
    error::CheckoutError,
    inventory::{Held, InventoryFailure, Stock},
    metrics::SagaMetrics,
    orders::{self, Change, Entry, Order, Outcome, Stage, Status, Step},
};

/// How many orders [`AwaitingPayment`] keeps at most; the oldest go first.
const AWAITING_CAPACITY: usize = 4096;

/// The orders this instance left waiting for their payment, as it wrote them: a payment result starts
/// from this copy instead of reading the order again (one read less per checkout).
///
/// A copy can go stale when another instance writes the order. Three rules keep that from ever deciding
/// a step:
/// - Every decision made from a copy ends in a write guarded by the order's version. A stale copy's write
///   is refused, and the result is decided again from a fresh read. A decision that would write nothing
///   (a duplicate, a stale attempt's failure) is always made from a fresh read.
/// - A copy is used only while younger than half the payment timeout. Until the timeout, no driver may
///   take the order up (it is not due), so no driver can be giving it up or retrying it meanwhile. A late
///   success therefore cannot reach inventory's commit while another instance releases the hold, beyond
///   the race any read already has with a later writer.
/// - Every write this instance makes through the saga replaces or drops its copy.
#[derive(Debug, Default)]
pub struct AwaitingPayment(std::sync::Mutex<Awaiting>);

#[derive(Debug, Default)]
struct Awaiting {
    /// Each copy with when it was kept.
    orders: HashMap<String, (Order, Instant)>,
    /// Ids in the order they came, to drop the oldest; an id already taken is skipped when it comes up.
    arrival: VecDeque<String>,
}

impl AwaitingPayment {
    /// Keeps `order` (just written) if it waits for its payment now, and forgets any older copy otherwise.
    fn note(&self, order: &Order) {
        let mut awaiting = self.0.lock().expect("awaiting lock");
        if order.status != Status::PaymentPending || order.step != Step::AwaitPayment {
            awaiting.orders.remove(order.order_id.as_str());
            return;
        }
        if awaiting.orders.insert(order.order_id.to_string(), (order.clone(), Instant::now())).is_none() {
            awaiting.arrival.push_back(order.order_id.to_string());
        }
        while awaiting.arrival.len() > AWAITING_CAPACITY {
            if let Some(oldest) = awaiting.arrival.pop_front() {
                awaiting.orders.remove(&oldest);
            }
        }
    }

    /// The copy of `order_id` as this instance last wrote it, if kept and younger than `max_age`; it is kept
    /// no longer either way.
    pub fn take(&self, order_id: &str, max_age: Duration) -> Option<Order> {
        let (order, kept_at) = self.0.lock().expect("awaiting lock").orders.remove(order_id)?;
        (kept_at.elapsed() < max_age).then_some(order)
    }

    /// The copy of `order_id`, if kept, and still kept (tests).
    pub fn peek(&self, order_id: &str) -> Option<Order> {
        self.0.lock().expect("awaiting lock").orders.get(order_id).map(|(order, _)| order.clone())
    }
}

/// Everything the saga needs.
#[derive(Debug, Clone)]
pub struct Saga {
    /// checkout's database.
    pub pool: PgPool,
    /// inventory-manager (a fake in decision tests).
    pub inventory: Arc<dyn Stock>,
    /// Names (for events, and the payment provider's queue).
    pub topology: Topology,
    /// The orders this instance's driver holds.
    pub leases: Arc<Leases>,
    /// The orders this instance left waiting for their payment, as written.
    pub awaiting: Arc<AwaitingPayment>,
    /// Pacing.
    pub settings: SagaSettings,
    /// This instance's outbox relay, given the rows each write queued.
    pub outbox: Arc<Handoff>,
    /// Brings the driver's next wake forward when a step falls due before it.
    pub driver_alarm: Arc<Alarm>,
    /// Where steps and final statuses are counted.
    pub metrics: SagaMetrics,
}

impl Saga {
    fn backoff(&self, attempt: i32) -> Duration {
        let factor = 2u32.saturating_pow(u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(16));
        self.settings.retry_base.saturating_mul(factor).min(self.settings.max_backoff)
    }

    /// Runs `order`'s due steps until it waits (for payment or a retry) or is final. The order is
    /// leased to this driver meanwhile (renewed by the driver's heartbeat).
    pub async fn advance(&self, mut order: Order) -> Result<(), CheckoutError> {
        self.leases.hold(order.order_id.as_str(), order.version);
        let _holding = self.leases.holding(order.order_id.as_str());
        loop {
            // A step that runs past its bound is stopped (its transaction rolls back, its calls are dropped):
            // the order's lease then runs out and a driver takes it up again; every step is safe to repeat.
            let bound = self.settings.step_timeout;
            let next = match tokio::time::timeout(bound, self.step(&order)).await {
                Ok(next) => next?,
                Err(_) => return Err(CheckoutError::StepTimedOut { order_id: order.order_id.to_string(), bound }),
            };
            match next {
                Some(next) => {
                    self.leases.hold(next.order_id.as_str(), next.version);
                    order = next;
                }
                None => return Ok(()),
            }
        }
    }

    /// Runs `order`'s due step and writes what it led to; the order as written when the driver goes straight
    /// on with its next step, none when it waits or is final.
    async fn step(&self, order: &Order) -> Result<Option<Order>, CheckoutError> {
        let started = Instant::now();
        let change = match order.step {
            Step::Done => return Ok(None),
            Step::Reserve => self.reserve(order).await,
            Step::RequestPayment => self.request_payment(order)?,
            Step::AwaitPayment => self.payment_timed_out(order)?,
            Step::Commit => self.commit(order).await?,
            Step::RollBack => self.roll_back(order).await?,
        };
        let took = started.elapsed();
        let (chain, go_on) = self.chain(order, change)?;
        Ok(self.apply_chain(order, chain, go_on, took).await?.filter(|_| go_on))
    }

    /// Takes in a new order: its reservation runs before anything is stored, and the order is stored once,
    /// as the reservation (and the charge request it leads to) leave it: one write instead of two. A crash
    /// before the write redelivers `order.place`, and inventory answers a repeated reservation with the one
    /// it holds, so nothing is held twice; a hold whose order is never stored runs out with its TTL.
    /// Returns false when the order already exists (a redelivery): nothing changes then.
    pub async fn take_in(&self, placed: &PlaceOrder) -> Result<bool, CheckoutError> {
        let order = orders::pending(placed);
        let started = Instant::now();
        let change = self.reserve(&order).await;
        let took = started.elapsed();
        let (stage, outcome) = (change.timeline.stage, change.timeline.outcome);
        let (chain, go_on) = self.chain(&order, change)?;
        let due = chain.last().and_then(|c| c.next_action_in);
        let Some((next, rows)) =
            orders::place_after(&self.pool, &self.topology, placed, chain, self.settings.lease).await?
        else {
            return Ok(false);
        };
        // Kept before the relay has the charge request, so the charge's answer finds it.
        self.awaiting.note(&next);
        self.metrics.step(stage, outcome, took);
        if next.status.is_final() {
            self.metrics.ended(next.status);
        }
        self.outbox.hand(rows);
        if go_on {
            // Stored and leased: if the next step fails here, the lease runs out and the driver takes it up.
            if let Err(e) = self.advance(next).await {
                tracing::warn!(order_id = %order.order_id, error = %e, "saga step failed");
            }
        } else if let Some(due) = due {
            self.driver_alarm.due_in(due);
        }
        Ok(true)
    }

    /// The changes to write for `change`: asking for payment calls nothing out, so it is written in the same
    /// statement as the step that led to it (the charge request goes out through the outbox with it). And
    /// whether the caller goes straight on with the next step: the order is then kept leased rather than
    /// due, so no other driver takes it up meanwhile (if this one dies, the lease runs out and another does).
    fn chain(&self, order: &Order, mut change: Change) -> Result<(Vec<Change>, bool), CheckoutError> {
        let mut chain = Vec::new();
        while change.step == Step::RequestPayment && change.next_action_in == Some(Duration::ZERO) {
            let next = self.request_payment(&order.clone().after(change.clone()))?;
            chain.push(std::mem::replace(&mut change, next));
        }
        let go_on = change.next_action_in == Some(Duration::ZERO);
        if go_on {
            change.next_action_in = Some(self.settings.lease);
        }
        chain.push(change);
        Ok((chain, go_on))
    }

    /// The charge request goes out with the `PAYMENT_PENDING` state, through the outbox: a crash cannot
    /// send one without the other; a lost answer is asked again after the payment timeout.
    fn request_payment(&self, order: &Order) -> Result<Change, CheckoutError> {
        let attempt = order.payment_attempts + 1;
        let request = ChargeRequest {
            payment_id: order.order_id.to_string(),
            order_id: order.order_id.clone(),
            client_id: order.client_id.clone(),
            amount_cents: order.total_cents,
            attempt,
        };
        let mut change =
            Change::from(order, Entry::new(Stage::Payment, Outcome::Requested, format!("attempt {attempt}")))
                .then(Status::PaymentPending, Step::AwaitPayment)
                .send(self.to_provider(kinds::PAYMENT_CHARGE, &request, order.order_id.as_str()));
        change.payment_attempts = attempt;
        change.next_action_in = Some(self.settings.payment_timeout);
        Ok(change)
    }

    fn to_provider(&self, kind: &str, payload: &impl serde::Serialize, order_id: &str) -> Outgoing {
        Outgoing::to_queue(&self.topology.payment_requests(), Envelope::new(kind, payload).correlated(order_id))
    }

    fn refund(&self, order: &Order) -> Result<Outgoing, CheckoutError> {
        let request = RefundRequest { payment_id: order.order_id.to_string(), order_id: order.order_id.clone() };
        Ok(self.to_provider(kinds::PAYMENT_REFUND, &request, order.order_id.as_str()))
    }

    /// Writes the changes and hands their outbox rows to the relay. A step scheduled for later is announced to the
    /// driver; one `leased` to this caller, who goes straight on with it, is not. Once written, the first
    /// change's step counts with its outcome and how long it `took`.
    async fn apply_chain(
        &self,
        order: &Order,
        chain: Vec<Change>,
        leased: bool,
        took: Duration,
    ) -> Result<Option<Order>, CheckoutError> {
        let due = chain.last().and_then(|c| c.next_action_in);
        let first = chain.first().map(|c| (c.timeline.stage, c.timeline.outcome));
        let written = orders::apply_chain(&self.pool, &self.topology, order, chain).await?;
        let (next, rows) = written.map_or((None, Vec::new()), |(next, rows)| (Some(next), rows));
        if let Some(next) = &next {
            self.awaiting.note(next);
            // Asking for payment is not a step's outcome; its answer is.
            if let Some((stage, outcome)) = first
                && outcome != Outcome::Requested
            {
                self.metrics.step(stage, outcome, took);
            }
            if next.status.is_final() && !order.status.is_final() {
                self.metrics.ended(next.status);
            }
        }
        self.outbox.hand(rows);
        if let (Some(due), Some(_), false) = (due, &next, leased) {
            self.driver_alarm.due_in(due);
        }
        Ok(next)
    }

    fn retry(&self, order: &Order, stage: Stage, why: String) -> Change {
        let attempts = order.step_attempts + 1;
        let mut change = Change::from(order, Entry::new(stage, Outcome::Retry, why.clone()));
        change.step_attempts = attempts;
        change.reason = why;
        change.next_action_in = Some(self.backoff(attempts));
        change
    }

    fn give_up(&self, order: &Order, stage: Stage, reason: String, refund_due: bool) -> Change {
        let mut change =
            Change::from(order, Entry::new(stage, Outcome::Failed, reason.clone())).then(order.status, Step::RollBack);
        change.roll_back_to = Some(Status::Failed);
        change.refund_due = order.refund_due || refund_due;
        change.reason = reason;
        change
    }

    async fn reserve(&self, order: &Order) -> Change {
        match self.inventory.reserve(order.order_id.as_str(), &order.lines, self.settings.reservation_ttl).await {
            Ok(Held::Held) => Change::from(order, Entry::new(Stage::Reserve, Outcome::Ok, ""))
                .then(Status::Reserved, Step::RequestPayment),
            // Only reachable if an earlier run got further than its record says. Payment is idempotent at the
            // provider, so asking again confirms only what was really paid.
            Ok(Held::Committed) => Change::from(order, Entry::new(Stage::Reserve, Outcome::Ok, "already committed"))
                .then(Status::Reserved, Step::RequestPayment),
            Ok(Held::Released) => Change::from(
                order,
                Entry::new(Stage::Reserve, Outcome::Failed, "the reservation expired before payment"),
            )
            .finish(Status::Failed, "the reservation expired before payment"),
            Err(InventoryFailure::Refused(why)) => {
                Change::from(order, Entry::new(Stage::Reserve, Outcome::Rejected, why.clone()))
                    .finish(Status::Rejected, why)
            }
            Err(InventoryFailure::Transient(why)) if order.step_attempts + 1 < self.settings.max_reserve_attempts => {
                self.retry(order, Stage::Reserve, why)
            }
            // Inventory may have taken the hold without our hearing of it: roll back to be sure.
            Err(e) => self.give_up(order, Stage::Reserve, format!("could not reserve stock: {e}"), false),
        }
    }

    fn payment_timed_out(&self, order: &Order) -> Result<Change, CheckoutError> {
        if order.payment_attempts >= self.settings.max_payment_attempts {
            // A lost answer may hide a successful charge: refund to be sure (a no-op if nothing was taken).
            return Ok(self.give_up(
                order,
                Stage::Payment,
                format!("no answer from the payment provider after {} attempts", order.payment_attempts),
                true,
            ));
        }
        let retry = Change::from(
            order,
            Entry::new(Stage::Payment, Outcome::Retry, "no answer from the payment provider in time"),
        )
        .then(Status::PaymentPending, Step::RequestPayment);
        Ok(retry)
    }

    async fn commit(&self, order: &Order) -> Result<Change, CheckoutError> {
        Ok(match self.inventory.commit(order.order_id.as_str()).await {
            Ok(Held::Committed) => {
                Change::from(order, Entry::new(Stage::Commit, Outcome::Ok, "")).finish(Status::Confirmed, "")
            }
            // Only a commit inventory says it made confirms the order: a hold still held is asked again.
            Ok(Held::Held) => self.retry(order, Stage::Commit, "inventory answered with the stock still held".into()),
            Err(InventoryFailure::Transient(why)) => self.retry(order, Stage::Commit, why),
            // Paid, but the hold is gone (it expired): the stock cannot be promised, so the money goes back.
            Ok(Held::Released) | Err(_) => self.give_up(
                order,
                Stage::Commit,
                "the stock reservation was lost before commit; payment refunded".into(),
                true,
            ),
        })
    }

    /// Releases the hold, then ends the order; a refund that is due goes out with that final state.
    async fn roll_back(&self, order: &Order) -> Result<Change, CheckoutError> {
        let target = order.roll_back_to.unwrap_or(Status::Failed);
        let reason = order.reason.clone();
        let mut change = match self.inventory.roll_back(order.order_id.as_str()).await {
            Ok(_) | Err(InventoryFailure::NotFound) => {
                let detail = if order.refund_due { "stock released; payment refund requested" } else { "" };
                Change::from(order, Entry::new(Stage::RollBack, Outcome::Ok, detail)).finish(target, reason)
            }
            Err(InventoryFailure::Transient(why)) => return Ok(self.retry(order, Stage::RollBack, why)),
            Err(e) => Change::from(order, Entry::new(Stage::RollBack, Outcome::Failed, e.to_string()))
                .finish(Status::Failed, format!("{reason}; roll back refused: {e}")),
        };
        if order.refund_due {
            change = change.send(self.refund(order)?);
            change.refund_due = false;
        }
        Ok(change)
    }

    /// Applies a `payment.result`. Duplicates and stale results change nothing; a success that comes
    /// after the saga gave up is refunded.
    pub async fn on_payment_result(&self, result: &PaymentResult) -> Result<(), CheckoutError> {
        // A lost race with the driver (it bumped the version) just means: read again and re-decide. The
        // first try starts from the order as this instance left it waiting, if it did and not long ago
        // (see `AwaitingPayment` for why that is safe).
        let mut kept = self.awaiting.take(result.order_id.as_str(), self.settings.payment_timeout / 2);
        for _ in 0..5 {
            let from_copy = kept.is_some();
            let order = match kept.take() {
                Some(order) => order,
                None => match orders::load(&self.pool, result.order_id.as_str()).await? {
                    Some(order) => order,
                    None => {
                        tracing::warn!(order_id = %result.order_id, "payment result for an unknown order");
                        return Ok(());
                    }
                },
            };
            let paying = order.status == Status::PaymentPending
                && matches!(order.step, Step::AwaitPayment | Step::RequestPayment);
            if !paying {
                // Decided from a fresh read only: nothing below is guarded by the version.
                if from_copy {
                    continue;
                }
                // Money taken for an order that is being rolled back or ended unpaid: give it back.
                let unpaid =
                    order.step == Step::RollBack || (order.status.is_final() && order.status != Status::Confirmed);
                if result.outcome == PaymentOutcome::Succeeded && unpaid {
                    tracing::warn!(order_id = %order.order_id, "successful charge for an order ending unpaid; refunding");
                    let refund =
                        RefundRequest { payment_id: result.payment_id.clone(), order_id: result.order_id.clone() };
                    let message = self.to_provider(kinds::PAYMENT_REFUND, &refund, order.order_id.as_str());
                    let detail = format!("charge {} succeeded after the order ended unpaid", result.payment_id);
                    orders::record_refund(&self.pool, order.order_id.as_str(), detail, &message).await?;
                    self.outbox.wake();
                }
                // Otherwise a duplicate, or a result for an order already past payment.
                return Ok(());
            }
            let change = match &result.outcome {
                PaymentOutcome::Succeeded => Change::from(
                    &order,
                    Entry::new(Stage::Payment, Outcome::Ok, format!("charged {} cents", order.total_cents)),
                )
                .then(Status::PaymentPending, Step::Commit),
                PaymentOutcome::Declined { reason } => {
                    let mut change =
                        Change::from(&order, Entry::new(Stage::Payment, Outcome::Declined, reason.clone()))
                            .then(Status::PaymentPending, Step::RollBack);
                    change.roll_back_to = Some(Status::PaymentDeclined);
                    change.reason = format!("payment declined: {reason}");
                    change
                }
                // A stale attempt's failure, or one whose retry is already scheduled.
                PaymentOutcome::TechnicalFailure { .. }
                    if result.attempt != order.payment_attempts || order.step == Step::RequestPayment =>
                {
                    // Dropped on a fresh read only: a stale copy may not know of this attempt.
                    if from_copy {
                        continue;
                    }
                    return Ok(());
                }
                PaymentOutcome::TechnicalFailure { reason }
                    if order.payment_attempts >= self.settings.max_payment_attempts =>
                {
                    self.give_up(
                        &order,
                        Stage::Payment,
                        format!("payment failed after {} attempts: {reason}", order.payment_attempts),
                        false,
                    )
                }
                PaymentOutcome::TechnicalFailure { reason } => {
                    let mut change = Change::from(&order, Entry::new(Stage::Payment, Outcome::Retry, reason.clone()))
                        .then(Status::PaymentPending, Step::RequestPayment);
                    change.next_action_in = Some(self.backoff(order.payment_attempts));
                    change
                }
            };
            // The payment step lasts from the request (the order's last change) to this answer.
            let took = (Utc::now() - order.changed_at).to_std().unwrap_or_default();
            // The step a result leads to (commit, or roll back) runs now and is written together with the
            // result: one write instead of two. A crash before the write redelivers the result, and both
            // steps are idempotent at inventory, so running one again changes nothing.
            let mut followed = None;
            let mut chain = vec![change];
            if chain[0].next_action_in == Some(Duration::ZERO) {
                let ahead = order.clone().after(chain[0].clone());
                let started = Instant::now();
                let next = match ahead.step {
                    Step::Commit => Some(self.commit(&ahead).await?),
                    Step::RollBack => Some(self.roll_back(&ahead).await?),
                    _ => None,
                };
                if let Some(next) = next {
                    followed = Some((next.timeline.stage, next.timeline.outcome, started.elapsed()));
                    chain.push(next);
                }
            }
            // Whatever follows still (a roll back after a failed commit) runs here, leased, rather than
            // after a trip through the driver.
            let last = chain.last_mut().expect("the chain holds the result");
            let go_on = last.next_action_in == Some(Duration::ZERO);
            if go_on {
                last.next_action_in = Some(self.settings.lease);
            }
            if let Some(next) = self.apply_chain(&order, chain, go_on, took).await? {
                if let Some((stage, outcome, took)) = followed {
                    self.metrics.step(stage, outcome, took);
                }
                if go_on && let Err(e) = self.advance(next).await {
                    // Recorded and leased: the lease runs out and the driver takes the order up.
                    tracing::warn!(order_id = %order.order_id, error = %e, "saga step failed");
                }
                return Ok(());
            }
        }
        Err(CheckoutError::Internal(anyhow::anyhow!("order {} kept changing under a payment result", result.order_id)))
    }
}
