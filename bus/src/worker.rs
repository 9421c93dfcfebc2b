//! The one way an AMQP worker (cart-manager, checkout-manager, payment-gateway, the notifier) is built and runs:
//! its database migrated and its metrics endpoint bound ([`Built`]), then its bus started, its consumers and
//! background tasks spawned, and on shutdown all of them told to stop, given the grace period to finish, the
//! database pool closed and a broker that refused the queues reported ([`Worker`]).

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use ordermesh_config::{DatabaseSettings, Env, SharedSettings};
use ordermesh_lifecycle::stopped;
use ordermesh_telemetry::{Metrics, http::MetricsServer};
use sqlx::{PgPool, migrate::Migrator};
use tokio::{sync::watch, task::JoinHandle};

use crate::{Bus, ConsumerSettings, Handler, Publisher, Topology, consumer::reply_publisher, spawn_consumer};

/// What every worker reads alike: its database (`<PREFIX>_DATABASE_URL`, `<PREFIX>_DB_…`), how many jobs it
/// takes at once (`<PREFIX>_PREFETCH`, at least 1), where it serves metrics (`<PREFIX>_METRICS_ADDR`), its
/// shutdown grace (`SHUTDOWN_GRACE_MS`), and the settings every service shares with the topology they name.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The worker's own database.
    pub database: DatabaseSettings,
    /// Broker, names and inventory, shared with the other services.
    pub shared: SharedSettings,
    /// Queue and exchange names (from `shared.namespace`).
    pub topology: Topology,
    /// Jobs handled at once.
    pub prefetch: u16,
    /// How long shutdown waits for jobs in hand.
    pub shutdown_grace: Duration,
    /// Where `/metrics` and `/healthz` are served.
    pub metrics_addr: SocketAddr,
}

impl WorkerSettings {
    /// Reads them from `env` under `prefix` (`CART`), each defaulting to the worker's own default.
    pub fn load(
        env: &Env<'_>,
        prefix: &str,
        database: DatabaseSettings,
        prefetch: u16,
        shutdown_grace: Duration,
        metrics_addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        let shared = SharedSettings::from_env(env)?;
        let settings = Self {
            database: DatabaseSettings::from_env(env, prefix, database)?,
            topology: Topology::from_settings(&shared),
            shared,
            prefetch: env.or(&format!("{prefix}_PREFETCH"), prefetch)?,
            shutdown_grace: env.millis("SHUTDOWN_GRACE_MS", shutdown_grace)?,
            metrics_addr: env.or(&format!("{prefix}_METRICS_ADDR"), metrics_addr)?,
        };
        anyhow::ensure!(settings.prefetch >= 1, "{prefix}_PREFETCH must be at least 1");
        Ok(settings)
    }
}

/// A worker built, not yet running: its database created if asked and migrated, and its metrics endpoint bound
/// (a port taken fails the build, not the run), with the pool's gauges sampled at each scrape.
#[derive(Debug)]
pub struct Built {
    name: &'static str,
    pool: PgPool,
    metrics_server: MetricsServer,
}

impl Built {
    /// Prepares `name` (`cart-manager`: its database and gauges are called `cart`): `database` migrated with
    /// `migrator`, `/metrics` and `/healthz` bound at `metrics_addr` (`default_metrics_addr` being the service's
    /// default, which a second process on one machine must be told to move from).
    pub async fn new(
        name: &'static str,
        database: &DatabaseSettings,
        migrator: &Migrator,
        metrics_addr: SocketAddr,
        default_metrics_addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        let label = name.split('-').next().unwrap_or(name);
        let pool = ordermesh_db::connect_and_migrate(database, migrator)
            .await
            .with_context(|| format!("preparing the {label} database"))?;
        let metrics_server = MetricsServer::for_service(name, metrics_addr, default_metrics_addr).await?;
        ordermesh_db::watch_pool(metrics_server.metrics(), label, &pool);
        Ok(Self { name, pool, metrics_server })
    }

    /// Samples the outbox's backlog at each scrape too, for a worker that writes through an outbox.
    #[must_use]
    pub fn with_outbox(self) -> Self {
        crate::outbox::watch_backlog(self.metrics_server.metrics(), &self.pool);
        self
    }

    /// Where `/metrics` and `/healthz` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_server.local_addr()
    }

    /// The database pool (tests and tools read the service's tables through it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts the worker on RabbitMQ at `amqp_url` ([`Worker::start`]); returns it with the pool.
    pub fn start(self, amqp_url: &str, topology: &Topology) -> (Worker, PgPool) {
        (Worker::start(self.name, amqp_url, topology, self.metrics_server), self.pool)
    }
}

/// A worker being assembled, then run with [`Worker::run_until_stopped`].
#[derive(Debug)]
pub struct Worker {
    name: &'static str,
    bus: Bus,
    stop_tx: watch::Sender<bool>,
    stop: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Worker {
    /// Connects `name` to RabbitMQ at `amqp_url` (in the background: the broker may come later) and serves
    /// `metrics_server`, whose `/healthz` says whether the connection is up.
    pub fn start(name: &'static str, amqp_url: &str, topology: &Topology, metrics_server: MetricsServer) -> Self {
        let (stop_tx, stop) = watch::channel(false);
        let metrics = metrics_server.metrics().clone();
        let bus = Bus::start(amqp_url.to_owned(), topology.clone(), metrics, stop.clone());
        let tasks = vec![tokio::spawn(metrics_server.serve(bus.readiness(), stopped(stop.clone())))];
        Self { name, bus, stop_tx, stop, tasks }
    }

    /// The worker's connection.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The worker's metrics (its bus counts its messages there too).
    pub fn metrics(&self) -> &Metrics {
        self.bus.metrics()
    }

    /// Turns `true` when the worker stops: every background task given to [`Worker::spawn`] watches it.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// A publisher for replies, retries and dead letters, on a connection of its own (see
    /// [`reply_publisher`]).
    pub fn reply_publisher(&self) -> Arc<Publisher> {
        reply_publisher(&self.bus, self.stop.clone())
    }

    /// Consumes `queue` with `handler`; its answers, retries and dead letters go out through `publisher`.
    pub fn consume(&mut self, publisher: Arc<Publisher>, queue: String, settings: ConsumerSettings, handler: Handler) {
        let consumer = spawn_consumer(self.bus.clone(), publisher, queue, settings, handler, self.stop.clone());
        self.tasks.push(consumer);
    }

    /// Runs a background task (an outbox relay, a driver, a sweeper), which must end once the stop signal
    /// turns `true`.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Runs until `shutdown` resolves, or until the broker holds the queues with other arguments (then the
    /// worker stops with that sentence as its error, once, instead of reconnecting for ever). Every task is
    /// then told to stop and given `grace`: messages in hand finish and are acked, the rest stay on their
    /// queues (`left_behind` says what happens to what did not finish). Then `pool` is closed.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
        pool: &PgPool,
        left_behind: &str,
    ) -> anyhow::Result<()> {
        let Self { name, bus, stop_tx, tasks, .. } = self;
        let fatal = bus.until_stopped(shutdown).await;
        tracing::info!("shutting down {name}");
        let _ = stop_tx.send(true);
        if tokio::time::timeout(grace, futures::future::join_all(tasks)).await.is_err() {
            tracing::warn!(?grace, "{name} did not stop within its grace period; {left_behind}");
        }
        ordermesh_db::close_pool(pool).await;
        tracing::info!("{name} stopped");
        match fatal {
            Some(sentence) => Err(anyhow::anyhow!(sentence)),
            None => Ok(()),
        }
    }
}
