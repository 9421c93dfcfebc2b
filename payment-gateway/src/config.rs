//! payment-gateway's typed configuration, read once through the shared loader (the environment, or a map in tests).

use std::{net::SocketAddr, time::Duration};

use ordermesh_bus::{ConsumerSettings, Topology, WorkerSettings};
use ordermesh_config::{DatabaseSettings, Env, FromEnv, SharedSettings};

/// How the simulated provider behaves.
#[derive(Debug, Clone)]
pub struct SimulatorSettings {
    /// Balance of a client the provider has not seen yet (1,000.00).
    pub default_balance_cents: i64,
    /// Delay before each answer, as a real provider's network and processing time.
    pub latency: Duration,
    /// Share of charge attempts that fail technically, 0.0 to 1.0.
    pub failure_rate: f64,
    /// The first N attempts of every charge fail technically (deterministic fault injection).
    pub fail_first_attempts: i32,
}

/// Everything payment-gateway needs to start. `Debug` is safe to log: URLs print redacted.
#[derive(Debug, Clone)]
pub struct Config {
    /// The provider's own database.
    pub database: DatabaseSettings,
    /// Broker and names, shared with the other services.
    pub shared: SharedSettings,
    /// Queue and exchange names (from `shared.namespace`, or an ephemeral topology in tests).
    pub topology: Topology,
    /// Behaviour.
    pub simulator: SimulatorSettings,
    /// Requests handled at once: a slow provider answers many charges side by side.
    pub prefetch: u16,
    /// How long shutdown waits for the requests in hand.
    pub shutdown_grace: Duration,
    /// Where `/metrics` and `/healthz` are served.
    pub metrics_addr: SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database: DatabaseSettings::new("postgres://postgres@127.0.0.1:5432/ordermesh_payment"),
            shared: SharedSettings::default(),
            topology: Topology::default(),
            simulator: SimulatorSettings {
                default_balance_cents: 100_000,
                latency: Duration::from_millis(20),
                failure_rate: 0.0,
                fail_first_attempts: 0,
            },
            prefetch: 256,
            shutdown_grace: Duration::from_secs(10),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9104)),
        }
    }
}

impl FromEnv for Config {
    /// Reads `PAYMENT_*` and the shared variables.
    fn load(env: &Env<'_>) -> anyhow::Result<Self> {
        let d = Self::default();
        let WorkerSettings { database, shared, topology, prefetch, shutdown_grace, metrics_addr } =
            WorkerSettings::load(env, "PAYMENT", d.database, d.prefetch, d.shutdown_grace, d.metrics_addr)?;
        let config = Self {
            database,
            topology,
            shared,
            simulator: SimulatorSettings {
                default_balance_cents: env.or("PAYMENT_DEFAULT_BALANCE_CENTS", d.simulator.default_balance_cents)?,
                latency: env.millis("PAYMENT_LATENCY_MS", d.simulator.latency)?,
                failure_rate: env.or("PAYMENT_FAILURE_RATE", d.simulator.failure_rate)?,
                fail_first_attempts: env.or("PAYMENT_FAIL_FIRST_ATTEMPTS", d.simulator.fail_first_attempts)?,
            },
            prefetch,
            shutdown_grace,
            metrics_addr,
        };
        anyhow::ensure!(
            (0.0..=1.0).contains(&config.simulator.failure_rate),
            "PAYMENT_FAILURE_RATE must be between 0 and 1"
        );
        anyhow::ensure!(
            config.simulator.default_balance_cents >= 0,
            "PAYMENT_DEFAULT_BALANCE_CENTS must not be negative"
        );
        Ok(config)
    }
}

impl Config {
    /// How the request queue is consumed. A charge takes the simulated provider's latency: the bound of a
    /// handling stays well above it, whatever `AMQP_HANDLER_TIMEOUT_MS` says.
    pub fn consumer(&self) -> ConsumerSettings {
        ConsumerSettings {
            prefetch: self.prefetch,
            max_retries: self.shared.max_retries,
            handler_timeout: self.shared.handler_timeout.max(self.simulator.latency * 2 + Duration::from_secs(10)),
        }
    }
}
