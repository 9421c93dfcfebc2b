//! ordermesh's RabbitMQ plumbing: one reconnecting connection per process, confirmed publishing,
//! supervised consumers that ack, retry or dead-letter, request/reply over direct reply-to, the
//! transactional outbox that turns a database commit into a published message, and the one way a worker runs.

pub mod channels;
pub mod connection;
pub mod consumer;
pub mod dead_letters;
pub mod migrate;
pub mod outbox;
pub mod publisher;
pub mod rpc;
pub mod topology;
pub mod worker;

pub use connection::{Bus, BusError};
pub use consumer::{ConsumerSettings, Handled, Handler, Incoming, Outcome, handler_fn, spawn_consumer};
pub use publisher::Publisher;
pub use rpc::{Requests, RpcClient, RpcError};
pub use topology::{MIGRATE_COMMAND, NOTIFIED_EVENTS, QueueType, Topology};
pub use worker::{Built, Worker, WorkerSettings};

pub use ordermesh_config::DEFAULT_AMQP_URL;
