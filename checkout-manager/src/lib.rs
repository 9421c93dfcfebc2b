//! checkout-manager: the saga orchestrator. Every decision about an order's next step is made here.
//!
//! `orders` stores orders and applies each step's result (guarded by a version, so no lock is held
//! across a network call); `saga` decides and performs the steps; `driver` runs due steps; `inventory`
//! is the `Stock` trait and its gRPC client; `handler` is the AMQP transport; `refunds` asks again for
//! refunds the provider has not acknowledged. The payment provider is its own service (payment-gateway),
//! reached only by messages.

pub mod admin;
pub mod config;
pub mod driver;
pub mod error;
pub mod handler;
pub mod inventory;
pub mod leases;
pub mod metrics;
pub mod orders;
pub mod refunds;
pub mod saga;
pub mod startup;

pub use config::Config;
pub use error::CheckoutError;
pub use startup::Application;
