//! Building and running checkout-manager: database, RabbitMQ consumers, the saga driver and the outbox relay.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use ordermesh_bus::{Publisher, Worker, handler_fn, outbox};
use ordermesh_db::connect_and_migrate;
use ordermesh_telemetry::http::MetricsServer;
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
    pool: PgPool,
    metrics_server: MetricsServer,
}

impl Application {
    /// Prepares the database; RabbitMQ is connected in the background by `run_until_stopped`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = connect_and_migrate(&config.database, &MIGRATOR).await.context("preparing the checkout database")?;
        let metrics_server =
            MetricsServer::for_service("checkout-manager", config.metrics_addr, Config::default().metrics_addr).await?;
        ordermesh_db::watch_pool(metrics_server.metrics(), "checkout", &pool);
        outbox::watch_backlog(metrics_server.metrics(), &pool);
        Ok(Self { config, pool, metrics_server })
    }

    /// Where `/metrics` and `/healthz` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_server.local_addr()
    }

    /// The database pool, for tests (balances, stored orders).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs the saga until `shutdown` resolves.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { config, pool, metrics_server } = self;
        let topology = config.topology.clone();
        let mut worker = Worker::start("checkout-manager", config.shared.amqp_url.expose(), &topology, metrics_server);
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
