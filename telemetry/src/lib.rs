//! What an ordermesh process tells its operators: log lines (text or JSON), Prometheus metrics, and the
//! small HTTP endpoint that serves them for the services that have no HTTP port of their own.

pub mod grpc;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod trace;

pub use logs::{Telemetry, init, init_logs};
pub use metrics::Metrics;
