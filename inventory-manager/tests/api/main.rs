//! inventory-manager's integration tests: a real gRPC server on port 0 over a real, per-test PostgreSQL database.

mod auth;
mod concurrency;
mod discovery;
mod expiry;
mod helpers;
mod products;
mod reservations;
