//! Building and running payment-gateway: its database, the RabbitMQ connection and the request consumer.

use std::{future::Future, net::SocketAddr, sync::Arc};

use ordermesh_bus::{Built, Publisher, handler_fn};
use sqlx::{PgPool, migrate::Migrator};

use crate::{config::Config, provider::Provider};

/// The provider's migrations, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/payment");

/// A built, not yet running payment-gateway.
#[derive(Debug)]
pub struct Application {
    config: Config,
    built: Built,
}

impl Application {
    /// Prepares the database; RabbitMQ is connected in the background by `run_until_stopped`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let built = Built::new(
            "payment-gateway",
            &config.database,
            &MIGRATOR,
            config.metrics_addr,
            Config::default().metrics_addr,
        )
        .await?;
        Ok(Self { config, built })
    }

    /// Where `/metrics` and `/healthz` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.built.metrics_addr()
    }

    /// The provider's books, for tests and tools.
    pub fn pool(&self) -> &PgPool {
        self.built.pool()
    }

    /// Answers payment requests until `shutdown` resolves.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { config, built } = self;
        let (mut worker, pool) = built.start(config.shared.amqp_url.expose(), &config.topology);
        let publisher = Arc::new(Publisher::new(worker.bus().clone()));
        let provider = Provider {
            pool: pool.clone(),
            publisher: publisher.clone(),
            results_queue: config.topology.payment_results(),
            settings: config.simulator.clone(),
        };
        let handler = handler_fn(move |m| {
            let provider = provider.clone();
            async move { provider.handle(m).await }
        });
        worker.consume(publisher, config.topology.payment_requests(), config.consumer(), handler);
        let left_behind = "unacked requests will be redelivered";
        worker.run_until_stopped(shutdown, config.shutdown_grace, &pool, left_behind).await
    }
}
