//! cart-manager's typed configuration, read once through the shared loader (the environment, or a map in tests).

use std::{net::SocketAddr, time::Duration};

use ordermesh_bus::{ConsumerSettings, Topology, WorkerSettings};
use ordermesh_config::{DatabaseSettings, Env, FromEnv, SharedSettings};

/// Everything cart-manager needs to start. `Debug` is safe to log: URLs print redacted.
#[derive(Debug, Clone)]
pub struct Config {
    /// cart's own database.
    pub database: DatabaseSettings,
    /// Broker, names and inventory, shared with the other services.
    pub shared: SharedSettings,
    /// Queue and exchange names (from `shared.namespace`, or an ephemeral topology in tests).
    pub topology: Topology,
    /// Jobs handled at once.
    pub prefetch: u16,
    /// The longest the outbox relay sleeps when nothing woke it (it wakes on new rows, and when the
    /// first claim of a relay that died runs out).
    pub outbox_poll: Duration,
    /// How long shutdown waits for jobs in hand and the last outbox pass.
    pub shutdown_grace: Duration,
    /// Where `/metrics` and `/healthz` are served.
    pub metrics_addr: SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database: DatabaseSettings::new("postgres://postgres@127.0.0.1:5432/ordermesh_cart"),
            shared: SharedSettings::default(),
            topology: Topology::default(),
            prefetch: 32,
            outbox_poll: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9101)),
        }
    }
}

impl FromEnv for Config {
    /// Reads `CART_*` and the shared variables.
    fn load(env: &Env<'_>) -> anyhow::Result<Self> {
        let d = Self::default();
        let WorkerSettings { database, shared, topology, prefetch, shutdown_grace, metrics_addr } =
            WorkerSettings::load(env, "CART", d.database, d.prefetch, d.shutdown_grace, d.metrics_addr)?;
        let config = Self {
            database,
            topology,
            shared,
            prefetch,
            outbox_poll: env.millis("CART_OUTBOX_POLL_MS", d.outbox_poll)?,
            shutdown_grace,
            metrics_addr,
        };
        Ok(config)
    }
}

impl Config {
    /// How the job queue is consumed.
    pub fn consumer(&self) -> ConsumerSettings {
        ConsumerSettings {
            prefetch: self.prefetch,
            max_retries: self.shared.max_retries,
            handler_timeout: self.shared.handler_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logging_the_config_shows_no_password() {
        let vars = [("AMQP_URL", "amqp://u:hunter2@h/%2f"), ("CART_DATABASE_URL", "postgres://u:sekrit@h/c")];
        let config = Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2") && !printed.contains("sekrit"), "{printed}");
        assert_eq!(config.shared.amqp_url.expose(), "amqp://u:hunter2@h/%2f");
    }
}
