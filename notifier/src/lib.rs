//! notifier: emails shoppers about their orders. It subscribes to the order events it cares about
//! (`order.confirmed`, `order.payment_declined`, `order.failed`) through its own queue bound to the
//! order-events exchange, and keeps shoppers' email addresses, set through the gateway.
//!
//! `store` holds profiles and the record of what was sent (one email per event, however often it is
//! delivered); `email` writes and sends the message over SMTP; `handler` is the AMQP transport; `startup`
//! builds and runs it.

pub mod config;
pub mod email;
pub mod handler;
pub mod metrics;
pub mod startup;
pub mod store;

pub use config::Config;
pub use startup::Application;
