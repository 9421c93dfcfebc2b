//! ordermesh's message contracts: the versioned envelope, the validated ids inside it, and every payload.
//!
//! Naming convention, one for all: a message type is `<noun>.<verb or event>` in snake case
//! (`cart.add_item`, `order.place`, `payment.charge`, `order.confirmed`). On the order-events topic
//! exchange the routing key *is* the event's type, so `order.*` or `order.confirmed` bind as filters.

pub mod admin;
pub mod envelope;
pub mod ids;
pub mod kinds;
pub mod money;
pub mod payloads;

pub use envelope::{Envelope, EnvelopeHead, ErrorCode, MAX_MESSAGE_BYTES, ReplyError};
pub use ids::{Channel, ClientId, Email, IdError, IdempotencyKey, OrderId, ProductId, Quantity};
