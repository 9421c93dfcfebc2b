//! Building and running notifier: its database, the mailer, the RabbitMQ connection and its two consumers.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use ordermesh_bus::{Worker, handler_fn};
use ordermesh_db::connect_and_migrate;
use ordermesh_telemetry::http::MetricsServer;
use sqlx::{PgPool, migrate::Migrator};

use crate::{
    config::Config,
    email::Mailer,
    handler::{Notifier, lease},
    metrics::EmailMetrics,
};

/// notifier's migrations, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/notifier");

/// A built, not yet running notifier.
#[derive(Debug)]
pub struct Application {
    config: Config,
    pool: PgPool,
    metrics_server: MetricsServer,
}

impl Application {
    /// Prepares the database; RabbitMQ and the SMTP server are connected when needed.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = connect_and_migrate(&config.database, &MIGRATOR).await.context("preparing the notifier database")?;
        let metrics_server =
            MetricsServer::for_service("notifier", config.metrics_addr, Config::default().metrics_addr).await?;
        ordermesh_db::watch_pool(metrics_server.metrics(), "notifier", &pool);
        Ok(Self { config, pool, metrics_server })
    }

    /// Where `/metrics` and `/healthz` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_server.local_addr()
    }

    /// Profiles and sent emails, for tests and tools.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Emails shoppers and answers profile requests until `shutdown` resolves.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { config, pool, metrics_server } = self;
        let mut worker = Worker::start("notifier", config.shared.amqp_url.expose(), &config.topology, metrics_server);
        let publisher = worker.reply_publisher();
        let notifier = Notifier {
            pool: pool.clone(),
            mailer: Arc::new(Mailer::new(&config.smtp)?),
            lease: lease(config.smtp.timeout),
            metrics: EmailMetrics::register(worker.metrics()),
        };
        let n = notifier.clone();
        let events = handler_fn(move |m| {
            let n = n.clone();
            async move { n.event(m).await }
        });
        worker.consume(publisher.clone(), config.topology.notifier_events(), config.consumer(), events);
        let jobs = handler_fn(move |m| {
            let n = notifier.clone();
            async move { n.job(m).await }
        });
        worker.consume(publisher, config.topology.notifier_jobs(), config.consumer(), jobs);
        let left_behind = "unacked events will be redelivered";
        worker.run_until_stopped(shutdown, config.shutdown_grace, &pool, left_behind).await
    }
}
