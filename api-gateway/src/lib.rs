//! api-gateway: the HTTP front door. Each request becomes a job on RabbitMQ (or a catalogue read on
//! inventory's gRPC) and is answered within a deadline: never a hang, never a 500 for a caller's mistake.
//!
//! `routes` holds the router (its handlers in `routes::shop` and `routes::ops`, their bodies in
//! `routes::bodies`, the OpenAPI document in `routes::openapi`), `extract` the JSON and query extractors that
//! answer in the API's error shape, `error` the one error type and its mapping to HTTP status.

pub mod admin;
pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod keys;
pub mod routes;
pub mod sessions;
pub mod startup;
pub mod tls;
pub mod waiters;

pub use config::{AuthMode, Config};
pub use error::ApiError;
pub use routes::{ApiDoc, AppState, app};
pub use startup::Application;
