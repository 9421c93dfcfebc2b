//! notifier's typed configuration, read once through the shared loader (the environment, or a map in tests).

use std::{net::SocketAddr, time::Duration};

use ordermesh_bus::{ConsumerSettings, Topology, WorkerSettings};
use ordermesh_config::{DatabaseSettings, Env, FromEnv, SecretUrl, SharedSettings};

/// Where and how email is sent.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// `smtp://host:port` (plain), `smtp://host:587?tls=required` (STARTTLS), `smtps://host:465` (TLS);
    /// credentials as `smtp://user:password@host`. Prints redacted.
    pub url: SecretUrl,
    /// The sender, `Name <address>` or a bare address.
    pub from: String,
    /// Bound of one send, connection included.
    pub timeout: Duration,
}

/// Everything notifier needs to start. `Debug` is safe to log: URLs print redacted.
#[derive(Debug, Clone)]
pub struct Config {
    /// Profiles and the record of sent emails.
    pub database: DatabaseSettings,
    /// Broker and names, shared with the other services.
    pub shared: SharedSettings,
    /// Queue and exchange names (from `shared.namespace`, or an ephemeral topology in tests).
    pub topology: Topology,
    /// The mail server.
    pub smtp: SmtpSettings,
    /// Events handled at once.
    pub prefetch: u16,
    /// How long shutdown waits for the sends in hand.
    pub shutdown_grace: Duration,
    /// Where `/metrics` and `/healthz` are served.
    pub metrics_addr: SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database: DatabaseSettings::new("postgres://postgres@127.0.0.1:5432/ordermesh_notifier"),
            shared: SharedSettings::default(),
            topology: Topology::default(),
            smtp: SmtpSettings {
                url: SecretUrl::new("smtp://127.0.0.1:25"),
                from: "ordermesh <orders@ordermesh.localhost>".into(),
                timeout: Duration::from_secs(10),
            },
            prefetch: 16,
            shutdown_grace: Duration::from_secs(10),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9105)),
        }
    }
}

impl FromEnv for Config {
    /// Reads `NOTIFIER_*`, `SMTP_*` and the shared variables.
    fn load(env: &Env<'_>) -> anyhow::Result<Self> {
        let d = Self::default();
        let WorkerSettings { database, shared, topology, prefetch, shutdown_grace, metrics_addr } =
            WorkerSettings::load(env, "NOTIFIER", d.database, d.prefetch, d.shutdown_grace, d.metrics_addr)?;
        let config = Self {
            database,
            topology,
            shared,
            smtp: SmtpSettings {
                url: env.secret("SMTP_URL", &d.smtp.url)?,
                from: env.string("SMTP_FROM", &d.smtp.from),
                timeout: env.millis("SMTP_TIMEOUT_MS", d.smtp.timeout)?,
            },
            prefetch,
            shutdown_grace,
            metrics_addr,
        };
        anyhow::ensure!(config.smtp.timeout >= Duration::from_millis(100), "SMTP_TIMEOUT_MS must be at least 100");
        crate::email::Mailer::check(&config.smtp).map_err(|e| anyhow::anyhow!("SMTP_URL / SMTP_FROM: {e}"))?;
        Ok(config)
    }
}

impl Config {
    /// How the queues are consumed. A handling may rightly wait out another sender's claim (three times at
    /// most) and then send: its bound is at least four claims, whatever `AMQP_HANDLER_TIMEOUT_MS` says, so a
    /// slow mail server set with a long `SMTP_TIMEOUT_MS` is not cut off in the middle of every send.
    pub fn consumer(&self) -> ConsumerSettings {
        ConsumerSettings {
            prefetch: self.prefetch,
            max_retries: self.shared.max_retries,
            handler_timeout: self.shared.handler_timeout.max(crate::handler::lease(self.smtp.timeout) * 4),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Config;

    #[test]
    fn a_handling_may_wait_out_three_claims_and_send_before_it_is_cut() {
        let mut config = Config::default();
        let lease = crate::handler::lease(config.smtp.timeout);
        assert!(config.consumer().handler_timeout >= lease * 4);
        // A long SMTP timeout moves the bound with it; a larger bound set by the operator is kept.
        config.smtp.timeout = Duration::from_secs(60);
        assert_eq!(config.consumer().handler_timeout, crate::handler::lease(Duration::from_secs(60)) * 4);
        config.shared.handler_timeout = Duration::from_secs(3600);
        assert_eq!(config.consumer().handler_timeout, Duration::from_secs(3600));
    }
}
