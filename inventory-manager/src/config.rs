//! inventory-manager's typed configuration, read once from the environment (or any map, in tests).

use std::{net::SocketAddr, time::Duration};

use ordermesh_config::{AuthMode, DatabaseSettings, Env, FromEnv, tls::ServerTls};

/// Everything inventory-manager needs to start. `Debug` is safe to log: the database URL prints redacted.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the gRPC server listens; port 0 picks a free one (tests do).
    pub listen_addr: SocketAddr,
    /// inventory's own database. The pool is small on purpose: reservations contend on hot rows, and a
    /// small pool queues in the app instead of in lock waits.
    pub database: DatabaseSettings,
    /// Hold time of a reservation that asks for none (`ttl_seconds` 0).
    pub default_ttl: Duration,
    /// The longest hold a caller may ask for; a forgotten hold must not lock stock for days.
    pub max_ttl: Duration,
    /// The longest the expiry sweeper sleeps: it wakes when the first hold expires, and at least this often.
    pub sweep_interval: Duration,
    /// How often the database is pinged to keep the health status true.
    pub health_interval: Duration,
    /// Deadline of each RPC on the server side: a stuck request is cut, not left to hold a connection.
    pub request_timeout: Duration,
    /// How long shutdown lets RPCs in flight finish.
    pub shutdown_grace: Duration,
    /// RPCs served at once on one client connection; beyond it a call is refused at once with
    /// `RESOURCE_EXHAUSTED` (the callers retry with backoff) rather than queued behind the others.
    pub max_in_flight_per_connection: usize,
    /// Where `/metrics` and `/healthz` are served (HTTP, beside the gRPC port).
    pub metrics_addr: SocketAddr,
    /// Whether every RPC of `inventory.v1` needs a bearer token (`INVENTORY_AUTH`: `required`, the binary's
    /// default, or `off`, which the all-in-one development mesh defaults to). Health and reflection are open.
    pub auth: AuthMode,
    /// TLS, served when `INVENTORY_TLS_CERT_FILE` and `INVENTORY_TLS_KEY_FILE` are set. With
    /// `INVENTORY_TLS_CLIENT_CA_FILE` too, every client must present a certificate from that CA (mutual TLS),
    /// and a verified certificate is a `service` credential (the catalogue's writes still need an operator token).
    pub tls: Option<ServerTls>,
}

/// The default database: inventory's own, on the local PostgreSQL.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/ordermesh_inventory";

impl Default for Config {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database: DatabaseSettings::new(DEFAULT_DATABASE_URL),
            default_ttl: Duration::from_secs(15 * 60),
            max_ttl: Duration::from_secs(24 * 60 * 60),
            sweep_interval: Duration::from_secs(10),
            health_interval: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            max_in_flight_per_connection: 256,
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9103)),
            auth: AuthMode::Required,
            tls: None,
        }
    }
}

impl FromEnv for Config {
    /// Reads `INVENTORY_*`.
    fn load(env: &Env<'_>) -> anyhow::Result<Self> {
        let d = Self::default();
        let config = Self {
            listen_addr: env.or("INVENTORY_LISTEN_ADDR", d.listen_addr)?,
            database: DatabaseSettings::from_env(env, "INVENTORY", d.database)?,
            default_ttl: env.secs("INVENTORY_DEFAULT_TTL_SECONDS", d.default_ttl)?,
            max_ttl: env.secs("INVENTORY_MAX_TTL_SECONDS", d.max_ttl)?,
            sweep_interval: env.millis("INVENTORY_SWEEP_INTERVAL_MS", d.sweep_interval)?,
            health_interval: env.millis("INVENTORY_HEALTH_INTERVAL_MS", d.health_interval)?,
            request_timeout: env.millis("INVENTORY_REQUEST_TIMEOUT_MS", d.request_timeout)?,
            shutdown_grace: env.millis("SHUTDOWN_GRACE_MS", d.shutdown_grace)?,
            metrics_addr: env.or("INVENTORY_METRICS_ADDR", d.metrics_addr)?,
            max_in_flight_per_connection: env
                .or("INVENTORY_MAX_IN_FLIGHT_PER_CONNECTION", d.max_in_flight_per_connection)?,
            auth: env.or("INVENTORY_AUTH", d.auth)?,
            tls: ServerTls::from("INVENTORY_TLS", Some("INVENTORY_TLS_CLIENT_CA_FILE"), |k| env.raw(k))?,
        };
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
        let config = Config { database: DatabaseSettings::new("postgres://u:secret@h/db"), ..Config::default() };
        assert!(!format!("{config:?}").contains("secret"));
    }
}
