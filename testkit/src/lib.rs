//! Helpers for ordermesh's tests only: a dev-dependency, so production builds never compile them.

pub mod amqp;
pub mod smtp;
pub mod testdb;
pub mod watchdog;
