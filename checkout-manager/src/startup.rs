//! Building and running checkout-manager: database, RabbitMQ consumers, the saga driver and the outbox relay.

use std::{future::Future, net::SocketAddr, sync::Arc};

use ordermesh_bus::{Built, Publisher, handler_fn, outbox};
use sqlx::{PgPool, migrate::Migrator};

use crate::{
    config::Config,
    driver, handler,
    inventory::Inventory,
    metrics::SagaMetrics,
    refunds,
    saga::{Leases, Saga},
};

/// checkout's migrations, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/checkout");

/// A built, not yet running checkout-manager.
#[derive(Debug)]
pub struct Application {
    config: Config,
    built: Built,
}

impl Application {
    /// Prepares the database; RabbitMQ is connected in the background by `run_until_stopped`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let built = Built::new(
            "checkout-manager",
            &config.database,
            &MIGRATOR,
            config.metrics_addr,
            Config::default().metrics_addr,
        )
        .await?
        .with_outbox();
        Ok(Self { config, built })
    }

    /// Where `/metrics` and `/healthz` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.built.metrics_addr()
    }

    /// The database pool, for tests (balances, stored orders).
    pub fn pool(&self) -> &PgPool {
        self.built.pool()
    }

    /// Runs the saga until `shutdown` resolves.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { config, built } = self;
        let topology = config.topology.clone();
        let (mut worker, pool) = built.start(config.shared.amqp_url.expose(), &topology);
        let publisher = Arc::new(Publisher::new(worker.bus().clone()));
        let outbox = Arc::new(outbox::Handoff::default());
        let metrics = worker.metrics().clone();
        let saga = Saga {
            pool: pool.clone(),
            inventory: Arc::new(Inventory::new(&config.shared, config.saga.inventory_timeout, metrics.clone())?),
            topology: topology.clone(),
            leases: Arc::new(Leases::default()),
            awaiting: Arc::default(),
            settings: config.saga.clone(),
            outbox: outbox.clone(),
            driver_alarm: Arc::default(),
            metrics: SagaMetrics::register(&metrics),
        };

        let replies = worker.reply_publisher();
        let settings = config.consumer(config.prefetch);
        let s = saga.clone();
        let jobs = handler_fn(move |m| {
            let s = s.clone();
            async move { handler::on_job(&s, m).await }
        });
        worker.consume(replies.clone(), topology.checkout_jobs(), settings, jobs);
        let s = saga.clone();
        let queries = handler_fn(move |m| {
            let s = s.clone();
            async move { handler::on_query(&s, m).await }
        });
        worker.consume(replies.clone(), topology.checkout_queries(), settings, queries);
        let s = saga.clone();
        let results = handler_fn(move |m| {
            let s = s.clone();
            async move { handler::on_payment_result(&s, m).await }
        });
        worker.consume(replies, topology.payment_results(), settings, results);
        let stop = worker.stop_signal();
        worker.spawn(refunds::run(pool.clone(), topology.clone(), outbox.clone(), stop.clone()));
        worker.spawn(outbox::run_relay(pool.clone(), publisher, outbox, config.poll, stop.clone()));
        worker.spawn(driver::run(saga, config.poll, stop));
        let left_behind = "leases run out and unacked messages are redelivered";
        worker.run_until_stopped(shutdown, config.shutdown_grace, &pool, left_behind).await
    }
}
