//! Building and running payment-gateway: its database, the RabbitMQ connection and the request consumer.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use ordermesh_bus::{Bus, Publisher, handler_fn, spawn_consumer};
use ordermesh_db::connect_and_migrate;
use ordermesh_lifecycle::stopped;
use ordermesh_telemetry::http::MetricsServer;
use sqlx::{PgPool, migrate::Migrator};
use tokio::sync::watch;

use crate::{config::Config, provider::Provider};

/// The provider's migrations, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/payment");

/// A built, not yet running payment-gateway.
#[derive(Debug)]
pub struct Application {
    config: Config,
    pool: PgPool,
    metrics_server: MetricsServer,
}

impl Application {
    /// Prepares the database; RabbitMQ is connected in the background by `run_until_stopped`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = connect_and_migrate(&config.database, &MIGRATOR).await.context("preparing the payment database")?;
        let metrics_server =
            MetricsServer::for_service("payment-gateway", config.metrics_addr, Config::default().metrics_addr).await?;
        ordermesh_db::watch_pool(metrics_server.metrics(), "payment", &pool);
        Ok(Self { config, pool, metrics_server })
    }

    /// Where `/metrics` and `/healthz` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_server.local_addr()
    }

    /// The provider's books, for tests and tools.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Answers payment requests until `shutdown` resolves.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { config, pool, metrics_server } = self;
        let metrics = metrics_server.metrics().clone();
        let (stop_tx, stop) = watch::channel(false);
        let bus =
            Bus::start(config.shared.amqp_url.expose().to_owned(), config.topology.clone(), metrics, stop.clone());
        let metrics_task = tokio::spawn(metrics_server.serve(bus.readiness(), stopped(stop.clone())));
        let publisher = Arc::new(Publisher::new(bus.clone()));
        let provider = Provider {
            pool: pool.clone(),
            publisher: publisher.clone(),
            results_queue: config.topology.payment_results(),
            settings: config.simulator.clone(),
        };
        let consumer = spawn_consumer(
            bus.clone(),
            publisher,
            config.topology.payment_requests(),
            config.consumer(),
            handler_fn(move |m| {
                let provider = provider.clone();
                async move { provider.handle(m).await }
            }),
            stop,
        );
        // A broker that holds the queues with other arguments stops the service once, with the fix in its words.
        let fatal = bus.until_stopped(shutdown).await;
        tracing::info!("shutting down payment-gateway");
        let _ = stop_tx.send(true);
        if tokio::time::timeout(config.shutdown_grace, async { tokio::join!(consumer, metrics_task) }).await.is_err() {
            tracing::warn!(grace = ?config.shutdown_grace, "payment-gateway did not stop within its grace period; unacked requests will be redelivered");
        }
        ordermesh_db::close_pool(&pool).await;
        tracing::info!("payment-gateway stopped");
        match fatal {
            Some(sentence) => Err(anyhow::anyhow!(sentence)),
            None => Ok(()),
        }
    }
}
