//! Building and running notifier: its database, the mailer, the RabbitMQ connection and its two consumers.

use std::{future::Future, net::SocketAddr, sync::Arc};

use ordermesh_bus::{Built, handler_fn};
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
    built: Built,
}

impl Application {
    /// Prepares the database; RabbitMQ and the SMTP server are connected when needed.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let built =
            Built::new("notifier", &config.database, &MIGRATOR, config.metrics_addr, Config::default().metrics_addr)
                .await?;
        Ok(Self { config, built })
    }

    /// Where `/metrics` and `/healthz` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.built.metrics_addr()
    }

    /// Profiles and sent emails, for tests and tools.
    pub fn pool(&self) -> &PgPool {
        self.built.pool()
    }

    /// Emails shoppers and answers profile requests until `shutdown` resolves.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { config, built } = self;
        let (mut worker, pool) = built.start(config.shared.amqp_url.expose(), &config.topology);
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
