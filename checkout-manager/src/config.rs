//! checkout-manager's typed configuration, read once through the shared loader (the environment, or a map in tests).

use std::{net::SocketAddr, time::Duration};

use ordermesh_bus::{ConsumerSettings, Topology, WorkerSettings};
use ordermesh_config::{DatabaseSettings, Env, FromEnv, SharedSettings};

/// How the saga paces and bounds its steps.
#[derive(Debug, Clone)]
pub struct SagaSettings {
    /// Charge attempts (technical failures and timeouts) before the order fails.
    pub max_payment_attempts: i32,
    /// How long a charge may go unanswered before it is asked again.
    pub payment_timeout: Duration,
    /// First retry delay; doubled per attempt, capped at `max_backoff`.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Tries of an inventory step that cannot reach inventory before a reservation is given up.
    pub max_reserve_attempts: i32,
    /// How long a claimed order is left to its driver before another may take it over. The driver
    /// renews it (every third of it) while a step runs, so it can be short: a crashed instance's orders
    /// are taken over this soon after it died.
    pub lease: Duration,
    /// Hold time asked of inventory; must outlast payment, retries included.
    pub reservation_ttl: Duration,
    /// Deadline of each gRPC call to inventory.
    pub inventory_timeout: Duration,
    /// Orders advanced at once by one instance.
    pub concurrency: usize,
    /// A saga step (its inventory calls and its writes) still running after this long is stopped, and its
    /// lease no longer renewed, so that another driver takes the order up: a step that hangs holds nothing.
    pub step_timeout: Duration,
}

/// Everything checkout-manager needs to start. `Debug` is safe to log: URLs print redacted.
#[derive(Debug, Clone)]
pub struct Config {
    /// checkout's own database.
    pub database: DatabaseSettings,
    /// Broker, names and inventory, shared with the other services.
    pub shared: SharedSettings,
    /// Queue and exchange names (from `shared.namespace`, or an ephemeral topology in tests).
    pub topology: Topology,
    /// Saga pacing.
    pub saga: SagaSettings,
    /// Messages handled at once per queue.
    pub prefetch: u16,
    /// The longest the outbox relay and the saga driver sleep when nothing woke them (they wake on new
    /// work, and when the first claim or step they know of falls due).
    pub poll: Duration,
    /// How long shutdown waits for the steps in hand and the last outbox pass.
    pub shutdown_grace: Duration,
    /// Where `/metrics` and `/healthz` are served.
    pub metrics_addr: SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database: DatabaseSettings {
                max_connections: 16,
                ..DatabaseSettings::new("postgres://postgres@127.0.0.1:5432/ordermesh_checkout")
            },
            shared: SharedSettings::default(),
            topology: Topology::default(),
            saga: SagaSettings {
                max_payment_attempts: 5,
                payment_timeout: Duration::from_secs(10),
                retry_base: Duration::from_millis(200),
                max_backoff: Duration::from_secs(30),
                max_reserve_attempts: 10,
                lease: Duration::from_secs(3),
                reservation_ttl: Duration::from_secs(15 * 60),
                inventory_timeout: Duration::from_secs(2),
                concurrency: 32,
                // Well past a step that meets only bounds: two inventory calls (2 s each) and a few statements.
                step_timeout: Duration::from_secs(20),
            },
            prefetch: 64,
            poll: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9102)),
        }
    }
}

impl FromEnv for Config {
    /// Reads `CHECKOUT_*` and the shared variables.
    fn load(env: &Env<'_>) -> anyhow::Result<Self> {
        let d = Self::default();
        let WorkerSettings { database, shared, topology, prefetch, shutdown_grace, metrics_addr } =
            WorkerSettings::load(env, "CHECKOUT", d.database, d.prefetch, d.shutdown_grace, d.metrics_addr)?;
        let config = Self {
            database,
            topology,
            saga: SagaSettings {
                max_payment_attempts: env.or("CHECKOUT_MAX_PAYMENT_ATTEMPTS", d.saga.max_payment_attempts)?,
                payment_timeout: env.millis("CHECKOUT_PAYMENT_TIMEOUT_MS", d.saga.payment_timeout)?,
                retry_base: env.millis("CHECKOUT_RETRY_BASE_MS", d.saga.retry_base)?,
                max_backoff: env.millis("CHECKOUT_MAX_BACKOFF_MS", d.saga.max_backoff)?,
                max_reserve_attempts: env.or("CHECKOUT_MAX_RESERVE_ATTEMPTS", d.saga.max_reserve_attempts)?,
                lease: env.millis("CHECKOUT_LEASE_MS", d.saga.lease)?,
                reservation_ttl: env.secs("CHECKOUT_RESERVATION_TTL_SECONDS", d.saga.reservation_ttl)?,
                inventory_timeout: shared.inventory_timeout,
                concurrency: env.or("CHECKOUT_CONCURRENCY", d.saga.concurrency)?,
                step_timeout: env.millis("CHECKOUT_STEP_TIMEOUT_MS", d.saga.step_timeout)?,
            },
            shared,
            prefetch,
            poll: env.millis("CHECKOUT_POLL_MS", d.poll)?,
            shutdown_grace,
            metrics_addr,
        };
        anyhow::ensure!(config.saga.max_payment_attempts >= 1, "CHECKOUT_MAX_PAYMENT_ATTEMPTS must be at least 1");
        anyhow::ensure!(config.saga.max_reserve_attempts >= 1, "CHECKOUT_MAX_RESERVE_ATTEMPTS must be at least 1");
        anyhow::ensure!(config.saga.concurrency >= 1, "CHECKOUT_CONCURRENCY must be at least 1");
        anyhow::ensure!(config.saga.lease >= Duration::from_millis(300), "CHECKOUT_LEASE_MS must be at least 300");
        anyhow::ensure!(
            config.saga.step_timeout >= config.saga.lease,
            "CHECKOUT_STEP_TIMEOUT_MS must be at least CHECKOUT_LEASE_MS"
        );
        Ok(config)
    }
}

impl Config {
    /// How a queue is consumed, `prefetch` deliveries at once.
    pub fn consumer(&self, prefetch: u16) -> ConsumerSettings {
        ConsumerSettings {
            prefetch,
            max_retries: self.shared.max_retries,
            handler_timeout: self.shared.handler_timeout,
        }
    }
}
