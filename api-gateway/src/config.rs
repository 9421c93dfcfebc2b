//! api-gateway's typed configuration, read once from the environment (or a map, in tests).

use std::{net::SocketAddr, time::Duration};

use ordermesh_bus::{DEFAULT_AMQP_URL, Topology};
use ordermesh_lifecycle::parse_var;

/// Everything api-gateway needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listen address; port 0 picks a free one (tests do).
    pub listen_addr: SocketAddr,
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// Queue and exchange names.
    pub topology: Topology,
    /// inventory-manager's gRPC endpoint (catalogue reads and readiness).
    pub inventory_url: String,
    /// How long a request waits for its reply before answering 504.
    pub request_timeout: Duration,
    /// Upper bound of `GET /orders/{id}?waitSeconds=`.
    pub max_wait: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 5003)),
            amqp_url: DEFAULT_AMQP_URL.into(),
            topology: Topology::default(),
            inventory_url: "http://127.0.0.1:50051".into(),
            request_timeout: Duration::from_secs(5),
            max_wait: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Reads `GATEWAY_*` and the shared `AMQP_URL`, `ORDERMESH_NAMESPACE`, `INVENTORY_URL`.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `lookup`, so tests can feed a map.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let d = Self::default();
        let config = Self {
            listen_addr: parse_var(&lookup, "GATEWAY_LISTEN_ADDR")?.unwrap_or(d.listen_addr),
            amqp_url: lookup("AMQP_URL").unwrap_or(d.amqp_url),
            topology: Topology::new(lookup("ORDERMESH_NAMESPACE").unwrap_or_default()),
            inventory_url: lookup("INVENTORY_URL").unwrap_or(d.inventory_url),
            request_timeout: parse_var(&lookup, "GATEWAY_REQUEST_TIMEOUT_MS")?
                .map_or(d.request_timeout, Duration::from_millis),
            max_wait: parse_var(&lookup, "GATEWAY_MAX_WAIT_SECONDS")?.map_or(d.max_wait, Duration::from_secs),
        };
        anyhow::ensure!(!config.request_timeout.is_zero(), "GATEWAY_REQUEST_TIMEOUT_MS must be at least 1");
        Ok(config)
    }
}
