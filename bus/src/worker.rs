//! The one way an AMQP worker (cart-manager, checkout-manager, payment-gateway, the notifier) runs: its bus and
//! its metrics endpoint started, its consumers and background tasks spawned, and on shutdown all of them told to
//! stop, given the grace period to finish, the database pool closed and a broker that refused the queues reported.

use std::{future::Future, sync::Arc, time::Duration};

use ordermesh_lifecycle::stopped;
use ordermesh_telemetry::{Metrics, http::MetricsServer};
use sqlx::PgPool;
use tokio::{sync::watch, task::JoinHandle};

use crate::{Bus, ConsumerSettings, Handler, Publisher, Topology, consumer::reply_publisher, spawn_consumer};

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
