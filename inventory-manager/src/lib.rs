//! inventory-manager: the gRPC service that owns stock and never oversells it.
//!
//! `startup` builds and runs the service, `grpc` is the transport, `store` the transactions,
//! `domain` the validated types, `error` the one error enum and its mapping to gRPC status, `auth` the
//! token gate of the RPCs and `tokens` the tokens it admits.

pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod startup;
pub mod store;
pub mod sweeper;
pub mod tokens;

pub use config::Config;
pub use error::InventoryError;
pub use startup::Application;
