//! cart-manager's typed configuration, read once from the environment (or a map, in tests).

use std::time::Duration;

use ordermesh_bus::{DEFAULT_AMQP_URL, Topology};
use ordermesh_lifecycle::{DatabaseSettings, parse_var};

/// Everything cart-manager needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// cart's own database.
    pub database: DatabaseSettings,
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// Queue and exchange names.
    pub topology: Topology,
    /// inventory-manager's gRPC endpoint.
    pub inventory_url: String,
    /// Deadline of each gRPC call to inventory.
    pub inventory_timeout: Duration,
    /// Jobs handled at once.
    pub prefetch: u16,
    /// How often the outbox is polled when nothing woke the relay.
    pub outbox_poll: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database: DatabaseSettings {
                url: "postgres://postgres@127.0.0.1:5432/ordermesh_cart".into(),
                create: true,
                max_connections: 10,
            },
            amqp_url: DEFAULT_AMQP_URL.into(),
            topology: Topology::default(),
            inventory_url: "http://127.0.0.1:50051".into(),
            inventory_timeout: Duration::from_secs(2),
            prefetch: 32,
            outbox_poll: Duration::from_millis(500),
        }
    }
}

impl Config {
    /// Reads `CART_*` and the shared `AMQP_URL`, `ORDERMESH_NAMESPACE`, `INVENTORY_URL` from the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `lookup`, so tests can feed a map.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let d = Self::default();
        let config = Self {
            database: DatabaseSettings {
                url: lookup("CART_DATABASE_URL").unwrap_or(d.database.url),
                create: parse_var(&lookup, "CART_CREATE_DATABASE")?.unwrap_or(true),
                max_connections: parse_var(&lookup, "CART_DB_MAX_CONNECTIONS")?.unwrap_or(d.database.max_connections),
            },
            amqp_url: lookup("AMQP_URL").unwrap_or(d.amqp_url),
            topology: Topology::new(lookup("ORDERMESH_NAMESPACE").unwrap_or_default()),
            inventory_url: lookup("INVENTORY_URL").unwrap_or(d.inventory_url),
            inventory_timeout: parse_var(&lookup, "INVENTORY_TIMEOUT_MS")?
                .map_or(d.inventory_timeout, Duration::from_millis),
            prefetch: parse_var(&lookup, "CART_PREFETCH")?.unwrap_or(d.prefetch),
            outbox_poll: parse_var(&lookup, "CART_OUTBOX_POLL_MS")?.map_or(d.outbox_poll, Duration::from_millis),
        };
        anyhow::ensure!(config.prefetch > 0, "CART_PREFETCH must be at least 1");
        anyhow::ensure!(config.database.max_connections > 0, "CART_DB_MAX_CONNECTIONS must be at least 1");
        Ok(config)
    }
}
