//! ordermesh's RabbitMQ plumbing: one reconnecting connection per process, confirmed publishing,
//! supervised consumers that ack, retry or dead-letter, request/reply over direct reply-to, and
//! the transactional outbox that turns a database commit into a published message.

pub mod connection;
pub mod consumer;
pub mod outbox;
pub mod publisher;
pub mod rpc;
pub mod topology;

pub use connection::{Bus, BusError};
pub use consumer::{Handler, Incoming, Outcome, handler_fn, spawn_consumer};
pub use publisher::Publisher;
pub use rpc::{RpcClient, RpcError};
pub use topology::Topology;

/// The default broker on this machine.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
