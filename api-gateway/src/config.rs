//! api-gateway's typed configuration, read once through the shared loader (the environment, or a map in tests).

use std::{net::SocketAddr, time::Duration};

use ordermesh_bus::Topology;
use ordermesh_config::{DatabaseSettings, Env, FromEnv, SharedSettings, tls::Identity};
use ordermesh_messages::Channel;

pub use ordermesh_config::AuthMode;

/// The channels API keys may be made for: `ORDERMESH_CHANNELS`, comma-separated (default `web,phone,sales-desk`).
pub fn channels(env: &Env<'_>) -> anyhow::Result<Vec<Channel>> {
    let raw = env.string("ORDERMESH_CHANNELS", "web,phone,sales-desk");
    let channels = raw
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| Channel::parse(c).map_err(|e| anyhow::anyhow!("ORDERMESH_CHANNELS={raw:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!channels.is_empty(), "ORDERMESH_CHANNELS must name at least one channel");
    Ok(channels)
}

/// Everything api-gateway needs to start. `Debug` is safe to log: URLs print redacted.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listen address; port 0 picks a free one (tests do).
    pub listen_addr: SocketAddr,
    /// Broker, names and inventory, shared with the other services.
    pub shared: SharedSettings,
    /// Queue and exchange names (from `shared.namespace`, or an ephemeral topology in tests).
    pub topology: Topology,
    /// How long a request waits for its reply before answering 504.
    pub request_timeout: Duration,
    /// Upper bound of `GET /orders/{id}?waitSeconds=`.
    pub max_wait: Duration,
    /// A waiting order read is woken by the order's final event; it also asks again this often, for an
    /// event missed while the broker was away.
    pub wait_poll: Duration,
    /// How long shutdown lets requests in flight finish.
    pub shutdown_grace: Duration,
    /// Cart, checkout and catalogue requests served at once; one more is refused at once with 503.
    pub max_in_flight: usize,
    /// Order reads served at once (most of them wait for a final status, cheaply); beyond it, 503.
    pub max_waiting: usize,
    /// Orders accepted by this gateway whose final event it has not seen yet (each for at most 10 s); while
    /// there are this many, adds are refused with 503.
    pub max_open_orders: usize,
    /// Whether callers need an API key.
    pub auth: AuthMode,
    /// The gateway's own database (API keys); only opened when `auth` is required.
    pub database: DatabaseSettings,
    /// Requests per second of a key that has no rate of its own; a key may burst that many at once.
    pub key_rate_per_second: u32,
    /// How long a dashboard sign-in lasts (`GATEWAY_SESSION_HOURS`, default 8): a working day.
    pub session_lifetime: Duration,
    /// HTTPS, served when `GATEWAY_TLS_CERT_FILE` and `GATEWAY_TLS_KEY_FILE` are set (else plain HTTP, for a
    /// deployment whose ingress terminates TLS).
    pub tls: Option<Identity>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 5003)),
            shared: SharedSettings::default(),
            topology: Topology::default(),
            request_timeout: Duration::from_secs(5),
            max_wait: Duration::from_secs(30),
            wait_poll: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
            max_in_flight: 32,
            max_waiting: 10_000,
            max_open_orders: 32,
            auth: AuthMode::Required,
            database: DatabaseSettings::new("postgres://postgres@127.0.0.1:5432/ordermesh_gateway"),
            key_rate_per_second: 100,
            session_lifetime: Duration::from_secs(8 * 3600),
            tls: None,
        }
    }
}

impl FromEnv for Config {
    /// Reads `GATEWAY_*` and the shared variables.
    fn load(env: &Env<'_>) -> anyhow::Result<Self> {
        let d = Self::default();
        let shared = SharedSettings::from_env(env)?;
        let config = Self {
            listen_addr: env.or("GATEWAY_LISTEN_ADDR", d.listen_addr)?,
            topology: Topology::from_settings(&shared),
            shared,
            request_timeout: env.millis("GATEWAY_REQUEST_TIMEOUT_MS", d.request_timeout)?,
            max_wait: env.secs("GATEWAY_MAX_WAIT_SECONDS", d.max_wait)?,
            wait_poll: env.millis("GATEWAY_WAIT_POLL_MS", d.wait_poll)?,
            shutdown_grace: env.millis("SHUTDOWN_GRACE_MS", d.shutdown_grace)?,
            max_in_flight: env.or("GATEWAY_MAX_IN_FLIGHT", d.max_in_flight)?,
            max_waiting: env.or("GATEWAY_MAX_WAITING", d.max_waiting)?,
            max_open_orders: env.or("GATEWAY_MAX_OPEN_ORDERS", d.max_open_orders)?,
            auth: env.or("GATEWAY_AUTH", d.auth)?,
            database: DatabaseSettings::from_env(env, "GATEWAY", d.database)?,
            key_rate_per_second: env.or("GATEWAY_KEY_RATE_PER_SECOND", d.key_rate_per_second)?,
            session_lifetime: env
                .get::<u64>("GATEWAY_SESSION_HOURS")?
                .map_or(d.session_lifetime, |h| Duration::from_secs(h.saturating_mul(3600))),
            tls: ordermesh_config::tls::identity_from("GATEWAY_TLS", |k| env.raw(k))?,
        };
        anyhow::ensure!(
            (1..=24 * 30).contains(&(config.session_lifetime.as_secs() / 3600)),
            "GATEWAY_SESSION_HOURS must be 1 to 720"
        );
        anyhow::ensure!(config.key_rate_per_second >= 1, "GATEWAY_KEY_RATE_PER_SECOND must be at least 1");
        anyhow::ensure!(
            config.request_timeout >= Duration::from_millis(100),
            "GATEWAY_REQUEST_TIMEOUT_MS must be at least 100"
        );
        anyhow::ensure!(!config.wait_poll.is_zero(), "GATEWAY_WAIT_POLL_MS must be at least 1");
        anyhow::ensure!(config.max_in_flight >= 1, "GATEWAY_MAX_IN_FLIGHT must be at least 1");
        anyhow::ensure!(config.max_waiting >= 1, "GATEWAY_MAX_WAITING must be at least 1");
        anyhow::ensure!(config.max_open_orders >= 1, "GATEWAY_MAX_OPEN_ORDERS must be at least 1");
        Ok(config)
    }
}
