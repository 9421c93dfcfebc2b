//! cart-manager: the RabbitMQ worker that owns carts and turns a cart into an order.
//!
//! `handler` decodes jobs from `cart-manager.jobs` and replies; `cart` holds the domain operations
//! on the database; `inventory` is the gRPC client for products and stock; `requests` each request's answer
//! or refusal by key; `handover` makes sure checkout-manager got each order; `error` the one error enum.

pub mod cart;
pub mod config;
pub mod error;
pub mod handler;
pub mod handover;
pub mod inventory;
pub mod requests;
pub mod startup;

pub use config::Config;
pub use error::CartError;
pub use startup::Application;
