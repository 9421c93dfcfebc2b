//! Log setup: plain lines on a terminal (coloured only there), one JSON object per line with `LOG_FORMAT=json`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
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

/// Installs the global log subscriber, filtered by `RUST_LOG` (default `info`), in the format
/// `LOG_FORMAT` asks for. Call once per process.
pub fn init_logs() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,lapin=warn"));
    let (format, unknown) = LogFormat::from_env();
    match format {
        LogFormat::Json => {
            tracing_subscriber::fmt().json().flatten_event(true).with_current_span(true).with_env_filter(filter).init()
        }
        LogFormat::Text => {
            tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(colour()).init()
        }
    }
    if let Some(v) = unknown {
        tracing::warn!(value = %v, "LOG_FORMAT is neither text nor json; writing text");
    }
}
