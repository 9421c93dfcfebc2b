//! payment-gateway: the simulated payment provider, its own process with its own database, reached only
//! over RabbitMQ like a real provider's adapter would be. It takes `payment.charge` and
//! `payment.refund` from `payment-gateway.requests` and answers charges with `payment.result` on
//! checkout-manager's results queue.
//!
//! `books` keeps balances and charges (idempotent on the payment id); `provider` is the AMQP transport
//! and the simulated behaviour (latency, injected failures); `startup` builds and runs it.

pub mod books;
pub mod config;
pub mod provider;
pub mod startup;

pub use config::Config;
pub use startup::Application;
