//! Log and span setup: plain lines on a terminal (coloured only there), one JSON object per line with
//! `LOG_FORMAT=json`; spans carry trace ids, exported over OTLP when an endpoint is configured.

use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, Layer, Registry, layer::SubscriberExt, util::SubscriberInitExt};

use crate::trace;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
    /// No log lines (spans only): for tests that look at traces.
    Silent,
}

impl LogFormat {
    /// `LOG_FORMAT` (`text` or `json`, any case); anything else is text, with a warning once logs are up.
    pub fn from_env() -> (Self, Option<String>) {
        match std::env::var("LOG_FORMAT") {
            Ok(v) if v.eq_ignore_ascii_case("json") => (Self::Json, None),
            Ok(v) if v.eq_ignore_ascii_case("text") || v.is_empty() => (Self::Text, None),
            Ok(v) => (Self::Text, Some(v)),
            Err(_) => (Self::Text, None),
        }
    }
}

/// Whether text logs may carry colour codes: only on a terminal, and never with `NO_COLOR` set.
fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The process's telemetry, installed by [`init`]: keep it alive for the life of the process; dropping it
/// flushes the spans not yet exported.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports what is buffered now (tests call it before looking at what a receiver got).
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber for `service`: logs filtered by `RUST_LOG` (default `info`) in the format
/// `LOG_FORMAT` asks for, and spans with trace ids, exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is
/// set (`OTEL_SERVICE_NAME` overrides the service name). Call once per process, inside the runtime.
pub fn init(service: &str) -> anyhow::Result<Telemetry> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.trim().is_empty());
    let service = std::env::var("OTEL_SERVICE_NAME").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| service.into());
    let (format, unknown) = LogFormat::from_env();
    let telemetry = init_with(&service, format, endpoint.as_deref())?;
    if let Some(v) = unknown {
        tracing::warn!(value = %v, "LOG_FORMAT is neither text nor json; writing text");
    }
    if let Some(endpoint) = endpoint {
        tracing::info!(%endpoint, "exporting spans over OTLP");
    }
    Ok(telemetry)
}

/// [`init`] with its settings given rather than read from the environment.
pub fn init_with(service: &str, format: LogFormat, endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,lapin=warn"));
    let provider = trace::provider(service, endpoint)?;
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match format {
        // The spans' fields (trace_id, order_id, queue, …) go with each line: the current one and its parents.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().with_target(false).with_ansi(colour()).boxed(),
        LogFormat::Silent => tracing_subscriber::layer::Identity::new().boxed(),
    };
    tracing_subscriber::registry().with(lines).with(trace::layer(&provider)).with(filter).try_init()?;
    Ok(Telemetry { provider })
}

/// Logs only, for tests and tools that do not trace: [`init`] without export, its guard kept for the process.
pub fn init_logs() {
    let (format, _) = LogFormat::from_env();
    if let Ok(telemetry) = init_with("ordermesh", format, None) {
        std::mem::forget(telemetry);
    }
}
