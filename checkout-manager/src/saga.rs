//! The checkout saga: reserve → pay → commit, or roll back and record why. Every decision about an
//! order's next step is made here, and each step's result is stored before the next step starts.

use std::{sync::Arc, time::Duration};

use ordermesh_bus::Topology;
use ordermesh_messages::{
    ClientId, OrderId,
    payloads::{ChargeRequest, PaymentOutcome, PaymentResult, RefundRequest},
};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::{
    config::SagaSettings,
    error::CheckoutError,
    inventory::{Held, Inventory, InventoryFailure},
    orders::{self, Change, Order, Status, Step},
    payment::PaymentGateway,
};

/// Everything the saga needs.
#[derive(Debug, Clone)]
pub struct Saga {
    /// checkout's database.
    pub pool: PgPool,
    /// inventory-manager.
    pub inventory: Inventory,
    /// The payment provider.
    pub payments: Arc<dyn PaymentGateway>,
    /// Names (for events).
    pub topology: Topology,
    /// Pacing.
    pub settings: SagaSettings,
    /// Wakes the outbox relay when events were written.
    pub outbox_wake: Arc<Notify>,
    /// Wakes the driver when a step became due now.
    pub driver_wake: Arc<Notify>,
}

impl Saga {
    fn backoff(&self, attempt: i32) -> Duration {
        let factor = 2u32.saturating_pow(u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(16));
        self.settings.retry_base.saturating_mul(factor).min(self.settings.max_backoff)
    }

    /// Runs `order`'s due steps until it waits (for payment or a retry) or is final.
    pub async fn advance(&self, mut order: Order) -> Result<(), CheckoutError> {
        loop {
            let change = match order.step {
                Step::Done => return Ok(()),
                Step::Reserve => self.reserve(&order).await,
                Step::RequestPayment => {
                    // State first, side effect second: if the request is lost, the timeout sends it again.
                    let attempt = order.payment_attempts + 1;
                    let mut change = Change::from(&order, ("payment", "requested", format!("attempt {attempt}")))
                        .then(Status::PaymentPending, Step::AwaitPayment);
                    change.payment_attempts = attempt;
                    change.next_action_in = Some(self.settings.payment_timeout);
                    if self.apply(&order, change).await?.is_none() {
                        return Ok(());
                    }
                    let request = ChargeRequest {
                        payment_id: order.order_id.clone(),
                        order_id: parse_order_id(&order.order_id)?,
                        client_id: ClientId::parse(order.client_id.clone()).map_err(|e| anyhow::anyhow!("{e}"))?,
                        amount_cents: order.total_cents,
                        attempt,
                    };
                    if let Err(e) = self.payments.request_charge(request).await {
                        tracing::warn!(order_id = %order.order_id, error = %e, "charge request not sent; the timeout will resend it");
                    }
                    return Ok(());
                }
                Step::AwaitPayment => self.payment_timed_out(&order),
                Step::Commit => self.commit(&order).await,
                Step::RollBack => self.roll_back(&order).await,
            };
            let due_now = change.next_action_in == Some(Duration::ZERO);
            match self.apply(&order, change).await? {
                Some(next) if due_now => order = next,
                _ => return Ok(()),
            }
        }
    }

    async fn apply(&self, order: &Order, change: Change) -> Result<Option<Order>, CheckoutError> {
        let next = orders::apply(&self.pool, &self.topology, order, change).await?;
        self.outbox_wake.notify_one();
        Ok(next)
    }

    fn retry(&self, order: &Order, step: &'static str, why: String) -> Change {
        let attempts = order.step_attempts + 1;
        let mut change = Change::from(order, (step, "retry", why.clone()));
        change.step_attempts = attempts;
        change.reason = why;
        change.next_action_in = Some(self.backoff(attempts));
        change
    }

    fn give_up(&self, order: &Order, step: &'static str, reason: String, refund_due: bool) -> Change {
        let mut change = Change::from(order, (step, "failed", reason.clone())).then(order.status, Step::RollBack);
        change.roll_back_to = Some(Status::Failed);
        change.refund_due = order.refund_due || refund_due;
        change.reason = reason;
        change
    }

    async fn reserve(&self, order: &Order) -> Change {
        match self.inventory.reserve(&order.order_id, &order.lines, self.settings.reservation_ttl).await {
            Ok(Held::Held) => {
                Change::from(order, ("reserve", "ok", String::new())).then(Status::Reserved, Step::RequestPayment)
            }
            // Only reachable if an earlier run got further than its record says. Payment is idempotent at the
            // provider, so asking again confirms only what was really paid.
            Ok(Held::Committed) => Change::from(order, ("reserve", "ok", "already committed".into()))
                .then(Status::Reserved, Step::RequestPayment),
            Ok(Held::Released) => {
                Change::from(order, ("reserve", "failed", "the reservation expired before payment".into()))
                    .finish(Status::Failed, "the reservation expired before payment")
            }
            Err(InventoryFailure::Refused(why)) => {
                Change::from(order, ("reserve", "rejected", why.clone())).finish(Status::Rejected, why)
            }
            Err(InventoryFailure::Transient(why)) if order.step_attempts + 1 < self.settings.max_reserve_attempts => {
                self.retry(order, "reserve", why)
            }
            // Inventory may have taken the hold without our hearing of it: roll back to be sure.
            Err(e) => self.give_up(order, "reserve", format!("could not reserve stock: {e}"), false),
        }
    }

    fn payment_timed_out(&self, order: &Order) -> Change {
        if order.payment_attempts >= self.settings.max_payment_attempts {
            // A lost answer may hide a successful charge: refund to be sure (a no-op if nothing was taken).
            return self.give_up(
                order,
                "payment",
                format!("no answer from the payment provider after {} attempts", order.payment_attempts),
                true,
            );
        }
        Change::from(order, ("payment", "retry", "no answer from the payment provider in time".into()))
            .then(Status::PaymentPending, Step::RequestPayment)
    }

    async fn commit(&self, order: &Order) -> Change {
        match self.inventory.commit(&order.order_id).await {
            Ok(Held::Committed | Held::Held) => {
                Change::from(order, ("commit", "ok", String::new())).finish(Status::Confirmed, "")
            }
            Err(InventoryFailure::Transient(why)) => self.retry(order, "commit", why),
            // Paid, but the hold is gone (it expired): the stock cannot be promised, so the money goes back.
            Ok(Held::Released) | Err(_) => self.give_up(
                order,
                "commit",
                "the stock reservation was lost before commit; payment refunded".into(),
                true,
            ),
        }
    }

    async fn roll_back(&self, order: &Order) -> Change {
        if order.refund_due {
            let refund = RefundRequest {
                payment_id: order.order_id.clone(),
                order_id: match parse_order_id(&order.order_id) {
                    Ok(id) => id,
                    Err(e) => return self.retry(order, "refund", e.to_string()),
                },
            };
            if let Err(e) = self.payments.request_refund(refund).await {
                return self.retry(order, "refund", e.to_string());
            }
        }
        let target = order.roll_back_to.unwrap_or(Status::Failed);
        let reason = order.reason.clone();
        match self.inventory.roll_back(&order.order_id).await {
            Ok(_) | Err(InventoryFailure::NotFound) => {
                let mut change = Change::from(order, ("roll_back", "ok", String::new())).finish(target, reason);
                change.refund_due = false;
                change
            }
            Err(InventoryFailure::Transient(why)) => self.retry(order, "roll_back", why),
            Err(e) => Change::from(order, ("roll_back", "failed", e.to_string()))
                .finish(Status::Failed, format!("{reason}; roll back refused: {e}")),
        }
    }

    /// Applies a `payment.result`. Duplicates and stale results change nothing; a success that comes
    /// after the saga gave up is refunded.
    pub async fn on_payment_result(&self, result: &PaymentResult) -> Result<(), CheckoutError> {
        // A lost race with the driver (it bumped the version) just means: read again and re-decide.
        for _ in 0..5 {
            let Some(order) = orders::load(&self.pool, result.order_id.as_str()).await? else {
                tracing::warn!(order_id = %result.order_id, "payment result for an unknown order");
                return Ok(());
            };
            let paying = order.status == Status::PaymentPending
                && matches!(order.step, Step::AwaitPayment | Step::RequestPayment);
            if !paying {
                // Money taken for an order that is being rolled back or ended unpaid: give it back.
                let unpaid =
                    order.step == Step::RollBack || (order.status.is_final() && order.status != Status::Confirmed);
                if result.outcome == PaymentOutcome::Succeeded && unpaid {
                    tracing::warn!(order_id = %order.order_id, "successful charge for an order ending unpaid; refunding");
                    let refund =
                        RefundRequest { payment_id: result.payment_id.clone(), order_id: result.order_id.clone() };
                    self.payments.request_refund(refund).await.map_err(|e| anyhow::anyhow!(e))?;
                }
                // Otherwise a duplicate, or a result for an order already past payment.
                return Ok(());
            }
            let change = match &result.outcome {
                PaymentOutcome::Succeeded => {
                    Change::from(&order, ("payment", "ok", format!("charged {} cents", order.total_cents)))
                        .then(Status::PaymentPending, Step::Commit)
                }
                PaymentOutcome::Declined { reason } => {
                    let mut change = Change::from(&order, ("payment", "declined", reason.clone()))
                        .then(Status::PaymentPending, Step::RollBack);
                    change.roll_back_to = Some(Status::PaymentDeclined);
                    change.reason = format!("payment declined: {reason}");
                    change
                }
                // A stale attempt's failure, or one whose retry is already scheduled.
                PaymentOutcome::TechnicalFailure { .. }
                    if result.attempt != order.payment_attempts || order.step == Step::RequestPayment =>
                {
                    return Ok(());
                }
                PaymentOutcome::TechnicalFailure { reason }
                    if order.payment_attempts >= self.settings.max_payment_attempts =>
                {
                    self.give_up(
                        &order,
                        "payment",
                        format!("payment failed after {} attempts: {reason}", order.payment_attempts),
                        false,
                    )
                }
                PaymentOutcome::TechnicalFailure { reason } => {
                    let mut change = Change::from(&order, ("payment", "retry", reason.clone()))
                        .then(Status::PaymentPending, Step::RequestPayment);
                    change.next_action_in = Some(self.backoff(order.payment_attempts));
                    change
                }
            };
            if self.apply(&order, change).await?.is_some() {
                self.driver_wake.notify_one();
                return Ok(());
            }
        }
        Err(CheckoutError::Internal(anyhow::anyhow!("order {} kept changing under a payment result", result.order_id)))
    }
}

fn parse_order_id(raw: &str) -> Result<OrderId, CheckoutError> {
    OrderId::parse(raw).map_err(|e| CheckoutError::Internal(anyhow::anyhow!("stored order id: {e}")))
}
