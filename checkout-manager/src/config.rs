//! checkout-manager's typed configuration, read once from the environment (or a map, in tests).

use std::time::Duration;

use ordermesh_bus::{DEFAULT_AMQP_URL, Topology};
use ordermesh_lifecycle::{DatabaseSettings, parse_var};

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
    /// How long a claimed order is left to its driver before another may take it over.
    pub lease: Duration,
    /// Hold time asked of inventory; must outlast payment, retries included.
    pub reservation_ttl: Duration,
    /// Deadline of each gRPC call to inventory.
    pub inventory_timeout: Duration,
    /// Orders advanced at once by one instance.
    pub concurrency: usize,
}

/// How the simulated payment provider behaves.
#[derive(Debug, Clone)]
pub struct SimulatorSettings {
    /// Run the simulated provider in this process (turn off where a real provider answers).
    pub enabled: bool,
    /// Balance of a client the provider has not seen yet (1,000.00).
    pub default_balance_cents: i64,
    /// Delay before each answer, as a real provider's network and processing time.
    pub latency: Duration,
    /// Share of charge attempts that fail technically, 0.0 to 1.0.
    pub failure_rate: f64,
    /// The first N attempts of every charge fail technically (deterministic fault injection).
    pub fail_first_attempts: i32,
}

/// Everything checkout-manager needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// checkout's own database.
    pub database: DatabaseSettings,
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// Queue and exchange names.
    pub topology: Topology,
    /// inventory-manager's gRPC endpoint.
    pub inventory_url: String,
    /// Saga pacing.
    pub saga: SagaSettings,
    /// The simulated payment provider.
    pub simulator: SimulatorSettings,
    /// Messages handled at once per queue.
    pub prefetch: u16,
    /// How often the outbox and due orders are polled when nothing woke them.
    pub poll: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database: DatabaseSettings {
                url: "postgres://postgres@127.0.0.1:5432/ordermesh_checkout".into(),
                create: true,
                max_connections: 16,
            },
            amqp_url: DEFAULT_AMQP_URL.into(),
            topology: Topology::default(),
            inventory_url: "http://127.0.0.1:50051".into(),
            saga: SagaSettings {
                max_payment_attempts: 5,
                payment_timeout: Duration::from_secs(10),
                retry_base: Duration::from_millis(200),
                max_backoff: Duration::from_secs(30),
                max_reserve_attempts: 10,
                lease: Duration::from_secs(30),
                reservation_ttl: Duration::from_secs(15 * 60),
                inventory_timeout: Duration::from_secs(2),
                concurrency: 32,
            },
            simulator: SimulatorSettings {
                enabled: true,
                default_balance_cents: 100_000,
                latency: Duration::from_millis(20),
                failure_rate: 0.0,
                fail_first_attempts: 0,
            },
            prefetch: 64,
            poll: Duration::from_millis(250),
        }
    }
}

impl Config {
    /// Reads `CHECKOUT_*`, `PAYMENT_*` and the shared `AMQP_URL`, `ORDERMESH_NAMESPACE`, `INVENTORY_URL`.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `lookup`, so tests can feed a map.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let d = Self::default();
        let ms = |key: &str, default: Duration| -> anyhow::Result<Duration> {
            Ok(parse_var::<u64>(&lookup, key)?.map_or(default, Duration::from_millis))
        };
        let config = Self {
            database: DatabaseSettings {
                url: lookup("CHECKOUT_DATABASE_URL").unwrap_or(d.database.url),
                create: parse_var(&lookup, "CHECKOUT_CREATE_DATABASE")?.unwrap_or(true),
                max_connections: parse_var(&lookup, "CHECKOUT_DB_MAX_CONNECTIONS")?
                    .unwrap_or(d.database.max_connections),
            },
            amqp_url: lookup("AMQP_URL").unwrap_or(d.amqp_url),
            topology: Topology::new(lookup("ORDERMESH_NAMESPACE").unwrap_or_default()),
            inventory_url: lookup("INVENTORY_URL").unwrap_or(d.inventory_url),
            saga: SagaSettings {
                max_payment_attempts: parse_var(&lookup, "CHECKOUT_MAX_PAYMENT_ATTEMPTS")?
                    .unwrap_or(d.saga.max_payment_attempts),
                payment_timeout: ms("CHECKOUT_PAYMENT_TIMEOUT_MS", d.saga.payment_timeout)?,
                retry_base: ms("CHECKOUT_RETRY_BASE_MS", d.saga.retry_base)?,
                max_backoff: ms("CHECKOUT_MAX_BACKOFF_MS", d.saga.max_backoff)?,
                max_reserve_attempts: parse_var(&lookup, "CHECKOUT_MAX_RESERVE_ATTEMPTS")?
                    .unwrap_or(d.saga.max_reserve_attempts),
                lease: ms("CHECKOUT_LEASE_MS", d.saga.lease)?,
                reservation_ttl: parse_var::<u64>(&lookup, "CHECKOUT_RESERVATION_TTL_SECONDS")?
                    .map_or(d.saga.reservation_ttl, Duration::from_secs),
                inventory_timeout: ms("INVENTORY_TIMEOUT_MS", d.saga.inventory_timeout)?,
                concurrency: parse_var(&lookup, "CHECKOUT_CONCURRENCY")?.unwrap_or(d.saga.concurrency),
            },
            simulator: SimulatorSettings {
                enabled: parse_var(&lookup, "PAYMENT_SIMULATOR")?.unwrap_or(true),
                default_balance_cents: parse_var(&lookup, "PAYMENT_DEFAULT_BALANCE_CENTS")?
                    .unwrap_or(d.simulator.default_balance_cents),
                latency: ms("PAYMENT_LATENCY_MS", d.simulator.latency)?,
                failure_rate: parse_var(&lookup, "PAYMENT_FAILURE_RATE")?.unwrap_or(d.simulator.failure_rate),
                fail_first_attempts: parse_var(&lookup, "PAYMENT_FAIL_FIRST_ATTEMPTS")?
                    .unwrap_or(d.simulator.fail_first_attempts),
            },
            prefetch: parse_var(&lookup, "CHECKOUT_PREFETCH")?.unwrap_or(d.prefetch),
            poll: ms("CHECKOUT_POLL_MS", d.poll)?,
        };
        anyhow::ensure!(config.saga.max_payment_attempts >= 1, "CHECKOUT_MAX_PAYMENT_ATTEMPTS must be at least 1");
        anyhow::ensure!(config.saga.max_reserve_attempts >= 1, "CHECKOUT_MAX_RESERVE_ATTEMPTS must be at least 1");
        anyhow::ensure!(config.saga.concurrency >= 1, "CHECKOUT_CONCURRENCY must be at least 1");
        anyhow::ensure!(config.prefetch >= 1, "CHECKOUT_PREFETCH must be at least 1");
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
