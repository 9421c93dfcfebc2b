//! An order as the saga sees it: its status and next step, its lines, and the change a step makes. Plain
//! data with no database in it; `orders` stores and reads it.

use super::*;

/// An order's public status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created; stock not yet held.
    Pending,
    /// Stock held.
    Reserved,
    /// A charge was requested.
    PaymentPending,
    /// Paid, stock committed. Final.
    Confirmed,
    /// Not enough stock. Final.
    Rejected,
    /// Payment declined, stock released. Final.
    PaymentDeclined,
    /// Gave up after retries, stock released. Final.
    Failed,
}

impl Status {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Reserved => "RESERVED",
            Self::PaymentPending => "PAYMENT_PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Rejected => "REJECTED",
            Self::PaymentDeclined => "PAYMENT_DECLINED",
            Self::Failed => "FAILED",
        }
    }

    pub(super) fn parse(raw: &str) -> Result<Self> {
        Ok(match raw {
            "PENDING" => Self::Pending,
            "RESERVED" => Self::Reserved,
            "PAYMENT_PENDING" => Self::PaymentPending,
            "CONFIRMED" => Self::Confirmed,
            "REJECTED" => Self::Rejected,
            "PAYMENT_DECLINED" => Self::PaymentDeclined,
            "FAILED" => Self::Failed,
            other => return Err(anyhow::anyhow!("unknown order status {other:?}").into()),
        })
    }

    /// Whether the saga is over.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Confirmed | Self::Rejected | Self::PaymentDeclined | Self::Failed)
    }

    /// The event published when an order enters this status.
    pub fn event_kind(self) -> &'static str {
        use kinds::events::*;
        match self {
            Self::Pending => ORDER_CREATED,
            Self::Reserved => ORDER_RESERVED,
            Self::PaymentPending => ORDER_PAYMENT_PENDING,
            Self::Confirmed => ORDER_CONFIRMED,
            Self::Rejected => ORDER_REJECTED,
            Self::PaymentDeclined => ORDER_PAYMENT_DECLINED,
            Self::Failed => ORDER_FAILED,
        }
    }
}

/// The saga's next step for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Hold stock for every line.
    Reserve,
    /// Ask the provider for a charge.
    RequestPayment,
    /// Wait for the charge's result (the driver only wakes for a timeout).
    AwaitPayment,
    /// Turn the hold into a sale.
    Commit,
    /// Release the hold (and refund, if due), then end in `roll_back_to`.
    RollBack,
    /// Nothing left to do.
    Done,
}

impl Step {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::RequestPayment => "request_payment",
            Self::AwaitPayment => "await_payment",
            Self::Commit => "commit",
            Self::RollBack => "roll_back",
            Self::Done => "done",
        }
    }

    pub(super) fn parse(raw: &str) -> Result<Self> {
        Ok(match raw {
            "reserve" => Self::Reserve,
            "request_payment" => Self::RequestPayment,
            "await_payment" => Self::AwaitPayment,
            "commit" => Self::Commit,
            "roll_back" => Self::RollBack,
            "done" => Self::Done,
            other => return Err(anyhow::anyhow!("unknown saga step {other:?}").into()),
        })
    }
}

/// Stores a name enum as the TEXT column it is kept in: written as [`as_str`](Status::as_str) gives it, read
/// back through `parse`, so a name the code does not know fails the read instead of passing as a string.
macro_rules! text_column {
    ($name:ident) => {
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> std::result::Result<Self, sqlx::error::BoxDynError> {
                let raw = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Self::parse(raw).map_err(|e| e.to_string().into())
            }
        }
    };
}

text_column!(Status);
text_column!(Step);

/// What a timeline entry records the saga doing: a stage of the order's life, not the saga's next [`Step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The order was stored.
    Created,
    /// Stock was asked for.
    Reserve,
    /// A charge was asked for, or its answer came.
    Payment,
    /// The hold was turned into a sale.
    Commit,
    /// The hold was released (and a refund asked for, if due).
    RollBack,
}

impl Stage {
    /// The stored and shown name (also the `step` label of the saga's metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Reserve => "reserve",
            Self::Payment => "payment",
            Self::Commit => "commit",
            Self::RollBack => "roll_back",
        }
    }
}

/// What came of a [`Stage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Ok,
    /// Asked for; the answer comes later (a charge). Not an outcome of its own in the step metrics.
    Requested,
    /// Not done this time; tried again later.
    Retry,
    /// Given up: the order rolls back.
    Failed,
    /// Refused by inventory (not enough stock).
    Rejected,
    /// Refused by the payment provider.
    Declined,
}

impl Outcome {
    /// The stored and shown name (also the `outcome` label of the saga's metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Requested => "requested",
            Self::Retry => "retry",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Declined => "declined",
        }
    }
}

/// The timeline entry a change records: what stage, what came of it, and a sentence for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stage.
    pub stage: Stage,
    /// What came of it.
    pub outcome: Outcome,
    /// Free text: an attempt number, a reason, an amount.
    pub detail: String,
}

impl Entry {
    /// An entry for `stage` with `outcome` and `detail`.
    pub fn new(stage: Stage, outcome: Outcome, detail: impl Into<String>) -> Self {
        Self { stage, outcome, detail: detail.into() }
    }
}

/// One order line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The product.
    pub product_id: ProductId,
    /// Units.
    pub quantity: i64,
    /// Unit price at checkout.
    pub unit_price_cents: i64,
}

/// An order as the saga works on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// The id (also the reservation id and the payment id).
    pub order_id: OrderId,
    /// The buyer.
    pub client_id: ClientId,
    /// Public status.
    pub status: Status,
    /// Next step.
    pub step: Step,
    /// Where a roll-back ends.
    pub roll_back_to: Option<Status>,
    /// Whether a charge must be given back before the order ends unpaid.
    pub refund_due: bool,
    /// Amount charged.
    pub total_cents: i64,
    /// Charge attempts so far.
    pub payment_attempts: i32,
    /// Failed tries of the current step.
    pub step_attempts: i32,
    /// Why the order ended as it did, or why the current step is being retried.
    pub reason: String,
    /// Optimistic-concurrency guard.
    pub version: i64,
    /// What was ordered, in product order.
    pub lines: Vec<Line>,
    /// When the order last changed as read (the start of the wait for payment, for one).
    pub changed_at: DateTime<Utc>,
    /// Where the order came from.
    pub channel: Channel,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its timeline so far, oldest first: a final event carries it, so whoever waits for the event
    /// needs no second read.
    pub timeline: Vec<TimelineEntry>,
}

impl Order {
    /// The order as `change` leaves it (same version: only a write moves that).
    pub fn after(self, change: Change) -> Self {
        Self {
            status: change.status,
            step: change.step,
            roll_back_to: change.roll_back_to,
            refund_due: change.refund_due,
            payment_attempts: change.payment_attempts,
            step_attempts: change.step_attempts,
            reason: change.reason,
            changed_at: Utc::now(),
            ..self
        }
    }
}

/// The result of a step: the order's next state and what to record about it.
#[derive(Debug, Clone)]
pub struct Change {
    /// New status.
    pub status: Status,
    /// New next step.
    pub step: Step,
    /// Where a roll-back ends.
    pub roll_back_to: Option<Status>,
    /// Whether a refund is due.
    pub refund_due: bool,
    /// Charge attempts.
    pub payment_attempts: i32,
    /// Failed tries of the (new) current step.
    pub step_attempts: i32,
    /// Reason shown with the status.
    pub reason: String,
    /// When the driver should run the next step; `None` for a final status.
    pub next_action_in: Option<Duration>,
    /// The timeline entry.
    pub timeline: Entry,
    /// Requests to send with the change (a charge, a refund), through the outbox in the same transaction:
    /// a crash can neither lose them nor send them without the change that asked for them.
    pub messages: Vec<Outgoing>,
}

impl Change {
    /// A change that keeps everything of `order` but what the caller then sets.
    pub fn from(order: &Order, timeline: Entry) -> Self {
        Self {
            status: order.status,
            step: order.step,
            roll_back_to: order.roll_back_to,
            refund_due: order.refund_due,
            payment_attempts: order.payment_attempts,
            step_attempts: order.step_attempts,
            reason: order.reason.clone(),
            next_action_in: Some(Duration::ZERO),
            timeline,
            messages: Vec::new(),
        }
    }

    /// Sends `message` with the change.
    pub fn send(mut self, message: Outgoing) -> Self {
        self.messages.push(message);
        self
    }

    /// Moves to `step` now, with a fresh attempt count.
    pub fn then(mut self, status: Status, step: Step) -> Self {
        self.status = status;
        self.step = step;
        self.step_attempts = 0;
        self.next_action_in = Some(Duration::ZERO);
        self
    }

    /// Ends the saga in `status` with `reason`.
    pub fn finish(mut self, status: Status, reason: impl Into<String>) -> Self {
        self.status = status;
        self.step = Step::Done;
        self.reason = reason.into();
        self.next_action_in = None;
        self
    }
}

/// A new order as the saga starts from: PENDING, its first step the reservation, nothing stored yet.
pub fn pending(order: &PlaceOrder) -> Order {
    let mut lines: Vec<Line> = order
        .lines
        .iter()
        .map(|l| Line { product_id: l.product_id.clone(), quantity: l.quantity, unit_price_cents: l.unit_price_cents })
        .collect();
    lines.sort_by(|a, b| a.product_id.cmp(&b.product_id));
    Order {
        order_id: order.order_id.clone(),
        client_id: order.client_id.clone(),
        status: Status::Pending,
        step: Step::Reserve,
        roll_back_to: None,
        refund_due: false,
        total_cents: order.total_cents,
        payment_attempts: 0,
        step_attempts: 0,
        reason: String::new(),
        version: 0,
        lines,
        // In microseconds, as stored: the order in memory is the order a read gives (a final event carries it).
        changed_at: order.created_at.trunc_subsecs(6),
        channel: order.channel.clone(),
        created_at: order.created_at.trunc_subsecs(6),
        timeline: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUSES: [Status; 7] = [
        Status::Pending,
        Status::Reserved,
        Status::PaymentPending,
        Status::Confirmed,
        Status::Rejected,
        Status::PaymentDeclined,
        Status::Failed,
    ];

    fn placed() -> PlaceOrder {
        let line = |p: &str, quantity, unit_price_cents| OrderLine {
            product_id: ProductId::parse(p).unwrap(),
            quantity,
            unit_price_cents,
        };
        PlaceOrder {
            order_id: OrderId::generate(),
            client_id: ClientId::parse("ada").unwrap(),
            // Out of byte order on purpose: the saga keeps them in lock order.
            lines: vec![line("mug", 2, 1250), line("Zebra", 1, 99), line("apple", 3, 10)],
            total_cents: 2 * 1250 + 99 + 3 * 10,
            created_at: Utc::now(),
            channel: Channel::parse("phone").unwrap(),
        }
    }

    #[test]
    fn every_status_and_step_reads_back_as_it_is_stored() {
        for status in STATUSES {
            assert_eq!(Status::parse(status.as_str()).unwrap(), status);
        }
        for step in [Step::Reserve, Step::RequestPayment, Step::AwaitPayment, Step::Commit, Step::RollBack, Step::Done]
        {
            assert_eq!(Step::parse(step.as_str()).unwrap(), step);
        }
        assert!(Status::parse("confirmed").is_err(), "names are exact");
        assert!(Step::parse("pay").is_err());
    }

    #[test]
    fn the_final_statuses_are_the_four_an_order_ends_in_each_with_its_own_event() {
        let finals: Vec<&str> = STATUSES.iter().filter(|s| s.is_final()).map(|s| s.as_str()).collect();
        assert_eq!(finals, ["CONFIRMED", "REJECTED", "PAYMENT_DECLINED", "FAILED"]);
        let mut events: Vec<&str> = STATUSES.iter().map(|s| s.event_kind()).collect();
        events.sort_unstable();
        events.dedup();
        assert_eq!(events.len(), STATUSES.len(), "one event per status");
    }

    #[test]
    fn a_new_order_starts_pending_at_the_reservation_with_its_lines_in_lock_order() {
        let placed = placed();
        let order = pending(&placed);
        assert_eq!((order.status, order.step, order.version), (Status::Pending, Step::Reserve, 0));
        assert_eq!(
            (order.order_id, order.client_id, order.channel),
            (placed.order_id, placed.client_id, placed.channel)
        );
        let products: Vec<&str> = order.lines.iter().map(|l| l.product_id.as_str()).collect();
        assert_eq!(products, ["Zebra", "apple", "mug"], "byte order, as the stock rows are locked");
        assert_eq!(order.total_cents, placed.total_cents);
        assert_eq!(order.created_at, placed.created_at.trunc_subsecs(6), "in microseconds, as stored");
    }

    #[test]
    fn a_change_keeps_what_it_does_not_set_and_finishing_ends_the_saga() {
        let order = pending(&placed());
        let moved = Change::from(&order, Entry::new(Stage::Reserve, Outcome::Ok, ""))
            .then(Status::Reserved, Step::RequestPayment);
        assert_eq!(
            (moved.status, moved.step, moved.next_action_in),
            (Status::Reserved, Step::RequestPayment, Some(Duration::ZERO))
        );
        assert_eq!(moved.payment_attempts, order.payment_attempts);
        let after = order.clone().after(moved);
        assert_eq!((after.status, after.step, after.version), (Status::Reserved, Step::RequestPayment, order.version));
        assert_eq!(after.lines, order.lines, "the lines are never changed by a step");

        let done = Change::from(&after, Entry::new(Stage::Reserve, Outcome::Rejected, "out of stock"))
            .finish(Status::Rejected, "out of stock");
        assert_eq!((done.status, done.step, done.next_action_in), (Status::Rejected, Step::Done, None));
        assert_eq!(after.after(done).reason, "out of stock");
    }
}
