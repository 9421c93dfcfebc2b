//! The payload of each message type.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{Channel, ClientId, Email, IdempotencyKey, OrderId, ProductId, Quantity};

/// `cart.add_item`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AddItem {
    /// Whose cart.
    pub client_id: ClientId,
    /// What to add.
    pub product_id: ProductId,
    /// How many units to add to what the cart already holds.
    pub quantity: Quantity,
    /// The client's `Idempotency-Key`: a retry with the same key and body is answered again, not applied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKey>,
}

/// Reply to `cart.add_item`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ItemAdded {
    /// Units of the product the cart holds now.
    pub quantity_in_cart: i64,
}

/// `cart.remove_item`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RemoveItem {
    /// Whose cart.
    pub client_id: ClientId,
    /// Which product to take out entirely.
    pub product_id: ProductId,
    /// The client's `Idempotency-Key`, as for [`AddItem`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKey>,
}

/// `cart.get`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GetCart {
    /// Whose cart.
    pub client_id: ClientId,
}

/// `cart.checkout`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkout {
    /// Whose cart.
    pub client_id: ClientId,
    /// The client's `Idempotency-Key`, or the gateway's request id: a retry with the same key gets the same order.
    pub idempotency_key: String,
    /// The channel of the caller's API key (`direct` without keys): the order records it.
    #[serde(default)]
    pub channel: Channel,
}

/// Reply to `cart.checkout`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckoutAccepted {
    /// The order the cart became.
    pub order_id: OrderId,
    /// Whether this request made it (false: an earlier one with the same key did, and it may have ended).
    #[serde(default)]
    pub created: bool,
}

/// One product in a cart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CartItem {
    /// The product.
    pub product_id: ProductId,
    /// Units in the cart.
    pub quantity: i64,
    /// Current unit price, from inventory.
    pub unit_price_cents: i64,
}

/// Reply to the cart requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CartView {
    /// Whose cart.
    pub client_id: ClientId,
    /// In product order.
    pub items: Vec<CartItem>,
    /// Sum of quantity × current unit price.
    pub total_cents: i64,
}

/// One line of an order, priced when the cart was checked out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OrderLine {
    /// The product.
    pub product_id: ProductId,
    /// Units ordered.
    pub quantity: i64,
    /// Unit price at checkout.
    pub unit_price_cents: i64,
}

/// `order.place`: the cart snapshot checkout-manager runs the saga for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlaceOrder {
    /// Made by cart-manager at checkout.
    pub order_id: OrderId,
    /// The buyer.
    pub client_id: ClientId,
    /// At least one line, each product once.
    pub lines: Vec<OrderLine>,
    /// Sum of the lines.
    pub total_cents: i64,
    /// When the checkout happened.
    pub created_at: DateTime<Utc>,
    /// Where the order came from.
    #[serde(default)]
    pub channel: Channel,
}

/// `order.get`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GetOrder {
    /// Which order.
    pub order_id: OrderId,
}

/// `order.taken_in`: which of these orders checkout-manager holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WhichTakenIn {
    /// The orders asked about (at most [`WhichTakenIn::MAX`]).
    pub order_ids: Vec<OrderId>,
}

impl WhichTakenIn {
    /// The most orders one question may name.
    pub const MAX: usize = 500;
}

/// Reply to `order.taken_in`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TakenIn {
    /// Those of the asked orders that checkout-manager holds.
    pub order_ids: Vec<OrderId>,
}

/// One step of an order's saga, as shown in its timeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TimelineEntry {
    /// `created`, `reserve`, `payment`, `commit`, `roll_back`, `refund`.
    pub step: String,
    /// `ok`, `rejected`, `declined`, `retry`, `failed`, ...
    pub outcome: String,
    /// Why, for a person (the product short of stock, the decline reason).
    pub detail: String,
    /// When the step's result was stored.
    pub at: DateTime<Utc>,
}

/// Reply to `order.get`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OrderView {
    /// The order.
    pub order_id: OrderId,
    /// The buyer.
    pub client_id: ClientId,
    /// `PENDING`, `RESERVED`, `PAYMENT_PENDING`, `CONFIRMED`, `REJECTED`, `PAYMENT_DECLINED`, `FAILED`.
    pub status: String,
    /// Whether the status is final.
    pub is_final: bool,
    /// What was ordered.
    pub lines: Vec<OrderLine>,
    /// What is charged.
    pub total_cents: i64,
    /// When the order was created.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
    /// Every saga step, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// Where the order came from.
    #[serde(default)]
    pub channel: Channel,
}

/// `payment.charge`: take `amount_cents` from a client. `payment_id` is the provider's idempotency key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChargeRequest {
    /// Idempotency key at the provider: one charge per id, whatever the number of attempts.
    pub payment_id: String,
    /// The order paid for.
    pub order_id: OrderId,
    /// Who pays.
    pub client_id: ClientId,
    /// How much, in cents.
    pub amount_cents: i64,
    /// Which attempt this is (1-based), echoed in the result.
    pub attempt: i32,
}

/// `payment.refund`: give back a successful charge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RefundRequest {
    /// The charge to give back.
    pub payment_id: String,
    /// The order it was for.
    pub order_id: OrderId,
}

/// `payment.refunded`: the provider has booked a refund (or found nothing to give back).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RefundDone {
    /// The charge.
    pub payment_id: String,
    /// The order it was for.
    pub order_id: OrderId,
    /// Whether money went back now (false: never charged, or refunded already).
    pub refunded: bool,
}

/// What became of a charge attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PaymentOutcome {
    /// Money taken.
    Succeeded,
    /// Refused by the provider (insufficient funds, ...); not retried.
    Declined {
        /// The provider's reason.
        reason: String,
    },
    /// The provider failed; nothing was taken; may be retried.
    TechnicalFailure {
        /// What went wrong.
        reason: String,
    },
}

/// `payment.result`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PaymentResult {
    /// The charge.
    pub payment_id: String,
    /// The order it was for.
    pub order_id: OrderId,
    /// The attempt this answers.
    pub attempt: i32,
    /// What happened.
    #[serde(flatten)]
    pub outcome: PaymentOutcome,
}

/// Every `order.*` event on the order-events exchange.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OrderEvent {
    /// The order.
    pub order_id: OrderId,
    /// The buyer.
    pub client_id: ClientId,
    /// The new status.
    pub status: String,
    /// Why, where the status says something went wrong.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The order's total.
    pub total_cents: i64,
    /// When the change was stored.
    pub at: DateTime<Utc>,
    /// Where the order came from.
    #[serde(default)]
    pub channel: Channel,
    /// What was ordered, so a subscriber (the notifier's email) needs no second read.
    #[serde(default)]
    pub lines: Vec<OrderLine>,
    /// When the order was created: on final events only, with `timeline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// Every saga step up to this final status, oldest first: on final events only, so the event is the
    /// whole final order and a reader waiting for it needs no second read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEntry>,
}

impl OrderEvent {
    /// The final order as `order.get` would show it, if this is a final event that carries it.
    pub fn final_view(&self) -> Option<OrderView> {
        let created_at = self.created_at?;
        if self.timeline.is_empty() {
            return None;
        }
        Some(OrderView {
            order_id: self.order_id.clone(),
            client_id: self.client_id.clone(),
            status: self.status.clone(),
            is_final: true,
            lines: self.lines.clone(),
            total_cents: self.total_cents,
            created_at,
            updated_at: self.at,
            timeline: self.timeline.clone(),
            channel: self.channel.clone(),
        })
    }
}

/// `client.put_profile`: set (or, with `email: null`, clear) a shopper's contact details.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PutProfile {
    /// The shopper.
    pub client_id: ClientId,
    /// Where order emails go; `None` stops them.
    pub email: Option<Email>,
}

/// `client.get_profile`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GetProfile {
    /// The shopper.
    pub client_id: ClientId,
}

/// Reply to `client.put_profile` and `client.get_profile`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    /// The shopper.
    pub client_id: ClientId,
    /// Where order emails go, if anywhere.
    pub email: Option<Email>,
    /// When it was last set; `None` if never.
    pub updated_at: Option<DateTime<Utc>>,
}
