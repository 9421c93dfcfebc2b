//! Building and running notifier: its database, the mailer, the RabbitMQ connection and its two consumers.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use ordermesh_bus::{Bus, consumer::reply_publisher, handler_fn, spawn_consumer};
use ordermesh_db::connect_and_migrate;
use ordermesh_lifecycle::stopped;
use ordermesh_telemetry::http::MetricsServer;
use sqlx::{PgPool, migrate::Migrator};
use tokio::sync::watch;

use crate::{
    config::Config,
    email::Mailer,
    handler::{Notifier, lease},
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
        let metrics = metrics_server.metrics().clone();
        let (stop_tx, stop) = watch::channel(false);
        let bus = Bus::start(
            config.shared.amqp_url.expose().to_owned(),
            config.topology.clone(),
            metrics.clone(),
            stop.clone(),
        );
        let metrics_task = tokio::spawn(metrics_server.serve(bus.readiness(), stopped(stop.clone())));
        let publisher = reply_publisher(&bus, stop.clone());
        let notifier = Notifier {
            pool: pool.clone(),
            mailer: Arc::new(Mailer::new(&config.smtp)?),
            lease: lease(config.smtp.timeout),
            metrics: metrics.clone(),
        };
        let events = {
            let notifier = notifier.clone();
            spawn_consumer(
                bus.clone(),
                publisher.clone(),
                config.topology.notifier_events(),
                config.consumer(),
                handler_fn(move |m| {
                    let notifier = notifier.clone();
                    async move { notifier.event(m).await }
                }),
                stop.clone(),
            )
        };
        let jobs = spawn_consumer(
            bus.clone(),
            publisher,
            config.topology.notifier_jobs(),
            config.consumer(),
            handler_fn(move |m| {
                let notifier = notifier.clone();
                async move { notifier.job(m).await }
            }),
            stop,
        );
        // A broker that holds the queues with other arguments stops the service once, with the fix in its words.
        let fatal = bus.until_stopped(shutdown).await;
        tracing::info!("shutting down notifier");
        let _ = stop_tx.send(true);
        if tokio::time::timeout(config.shutdown_grace, async { tokio::join!(events, jobs, metrics_task) })
            .await
            .is_err()
        {
            tracing::warn!(grace = ?config.shutdown_grace, "notifier did not stop within its grace period; unacked events will be redelivered");
        }
        ordermesh_db::close_pool(&pool).await;
        tracing::info!("notifier stopped");
        match fatal {
            Some(sentence) => Err(anyhow::anyhow!(sentence)),
            None => Ok(()),
        }
    }
}
