//! inventory-manager's typed configuration, read once from the environment (or any map, in tests).

use std::{fmt, net::SocketAddr, time::Duration};

use ordermesh_lifecycle::{parse_var as parse, redact};

/// Everything inventory-manager needs to start.
#[derive(Clone)]
pub struct Config {
    /// Where the gRPC server listens; port 0 picks a free one (tests do).
    pub listen_addr: SocketAddr,
    /// PostgreSQL URL of inventory's own database; may carry a password, so it is never printed.
    pub database_url: String,
    /// Create the database when it does not exist yet, so a fresh machine needs no manual step.
    pub create_database: bool,
    /// Pool size. Reservations contend on hot rows, and a small pool queues in the app instead of in lock waits.
    pub max_connections: u32,
    /// Hold time of a reservation that asks for none (`ttl_seconds` 0).
    pub default_ttl: Duration,
    /// The longest hold a caller may ask for; a forgotten hold must not lock stock for days.
    pub max_ttl: Duration,
    /// How often expired reservations are looked for.
    pub sweep_interval: Duration,
    /// How often the database is pinged to keep the health status true.
    pub health_interval: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen_addr", &self.listen_addr)
            .field("database_url", &redact(&self.database_url))
            .field("create_database", &self.create_database)
            .field("max_connections", &self.max_connections)
            .field("default_ttl", &self.default_ttl)
            .field("max_ttl", &self.max_ttl)
            .field("sweep_interval", &self.sweep_interval)
            .field("health_interval", &self.health_interval)
            .finish()
    }
}

/// The default database: inventory's own, on the local PostgreSQL.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/ordermesh_inventory";

impl Default for Config {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            create_database: true,
            max_connections: 10,
            default_ttl: Duration::from_secs(15 * 60),
            max_ttl: Duration::from_secs(24 * 60 * 60),
            sweep_interval: Duration::from_secs(1),
            health_interval: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// Reads `INVENTORY_*` variables from the process environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads configuration through `lookup`, so tests can feed a map instead of touching the environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let d = Self::default();
        let secs = |key: &str, default: Duration| -> anyhow::Result<Duration> {
            Ok(parse::<u64>(&lookup, key)?.map_or(default, Duration::from_secs))
        };
        let millis = |key: &str, default: Duration| -> anyhow::Result<Duration> {
            Ok(parse::<u64>(&lookup, key)?.map_or(default, Duration::from_millis))
        };
        let config = Self {
            listen_addr: parse(&lookup, "INVENTORY_LISTEN_ADDR")?.unwrap_or(d.listen_addr),
            database_url: lookup("INVENTORY_DATABASE_URL").unwrap_or(d.database_url),
            create_database: parse(&lookup, "INVENTORY_CREATE_DATABASE")?.unwrap_or(d.create_database),
            max_connections: parse(&lookup, "INVENTORY_DB_MAX_CONNECTIONS")?.unwrap_or(d.max_connections),
            default_ttl: secs("INVENTORY_DEFAULT_TTL_SECONDS", d.default_ttl)?,
            max_ttl: secs("INVENTORY_MAX_TTL_SECONDS", d.max_ttl)?,
            sweep_interval: millis("INVENTORY_SWEEP_INTERVAL_MS", d.sweep_interval)?,
            health_interval: millis("INVENTORY_HEALTH_INTERVAL_MS", d.health_interval)?,
        };
        anyhow::ensure!(config.max_connections > 0, "INVENTORY_DB_MAX_CONNECTIONS must be at least 1");
        anyhow::ensure!(!config.default_ttl.is_zero(), "INVENTORY_DEFAULT_TTL_SECONDS must be at least 1");
        anyhow::ensure!(
            config.default_ttl <= config.max_ttl,
            "the default TTL must not exceed INVENTORY_MAX_TTL_SECONDS"
        );
        anyhow::ensure!(!config.sweep_interval.is_zero(), "INVENTORY_SWEEP_INTERVAL_MS must be at least 1");
        anyhow::ensure!(!config.health_interval.is_zero(), "INVENTORY_HEALTH_INTERVAL_MS must be at least 1");
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn defaults_need_no_environment() {
        let config = Config::from_lookup(|_| None).unwrap();
        assert_eq!(config.listen_addr.port(), 50051);
        assert_eq!(config.default_ttl, Duration::from_secs(900));
    }

    #[test]
    fn variables_override_defaults_and_bad_values_are_named() {
        let env = HashMap::from([("INVENTORY_LISTEN_ADDR", "0.0.0.0:6000"), ("INVENTORY_DEFAULT_TTL_SECONDS", "30")]);
        let config = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(config.listen_addr.port(), 6000);
        assert_eq!(config.default_ttl, Duration::from_secs(30));

        let err = Config::from_lookup(|k| (k == "INVENTORY_DB_MAX_CONNECTIONS").then(|| "lots".into())).unwrap_err();
        assert!(err.to_string().contains("INVENTORY_DB_MAX_CONNECTIONS"), "{err}");
    }

    #[test]
    fn passwords_never_print() {
        let config = Config { database_url: "postgres://u:secret@h/db".into(), ..Config::default() };
        assert!(!format!("{config:?}").contains("secret"));
    }
}
