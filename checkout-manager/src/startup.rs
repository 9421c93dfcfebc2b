//! Building and running checkout-manager: database, RabbitMQ consumers, the saga driver and the outbox relay.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use ordermesh_bus::{Bus, Handler, Publisher, consumer::reply_publisher, handler_fn, outbox, spawn_consumer};
use ordermesh_db::connect_and_migrate;
use ordermesh_lifecycle::stopped;
use ordermesh_telemetry::http::MetricsServer;
use sqlx::{PgPool, migrate::Migrator};
use tokio::sync::watch;

use crate::{
    config::Config,
    driver, handler,
    inventory::Inventory,
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
        let metrics = metrics_server.metrics().clone();
        let topology = config.topology.clone();
        let (stop_tx, stop) = watch::channel(false);
        let bus =
            Bus::start(config.shared.amqp_url.expose().to_owned(), topology.clone(), metrics.clone(), stop.clone());
        let publisher = Arc::new(Publisher::new(bus.clone()));
        let outbox = Arc::new(outbox::Handoff::default());
        let saga = Saga {
            pool: pool.clone(),
            inventory: Arc::new(Inventory::new(&config.shared, config.saga.inventory_timeout, metrics.clone())?),
            topology: topology.clone(),
            leases: Arc::new(Leases::default()),
            awaiting: Arc::default(),
            settings: config.saga.clone(),
            outbox: outbox.clone(),
            driver_alarm: Arc::default(),
            metrics,
        };

        let mut tasks = vec![tokio::spawn(metrics_server.serve(bus.readiness(), stopped(stop.clone())))];
        let replies = reply_publisher(&bus, stop.clone());
        let consume = |queue: String, handler: Handler| {
            spawn_consumer(bus.clone(), replies.clone(), queue, config.consumer(config.prefetch), handler, stop.clone())
        };
        let s = saga.clone();
        tasks.push(consume(
            topology.checkout_jobs(),
            handler_fn(move |m| {
                let s = s.clone();
                async move { handler::on_job(&s, m).await }
            }),
        ));
        let s = saga.clone();
        tasks.push(consume(
            topology.checkout_queries(),
            handler_fn(move |m| {
                let s = s.clone();
                async move { handler::on_query(&s, m).await }
            }),
        ));
        let s = saga.clone();
        tasks.push(consume(
            topology.payment_results(),
            handler_fn(move |m| {
                let s = s.clone();
                async move { handler::on_payment_result(&s, m).await }
            }),
        ));
        tasks.push(tokio::spawn(refunds::run(pool.clone(), topology.clone(), outbox.clone(), stop.clone())));
        tasks.push(tokio::spawn(outbox::run_relay(pool.clone(), publisher.clone(), outbox, config.poll, stop.clone())));
        tasks.push(tokio::spawn(driver::run(saga, config.poll, stop.clone())));

        // A broker that holds the queues with other arguments stops the service once, with the fix in its words.
        let fatal = bus.until_stopped(shutdown).await;
        tracing::info!("shutting down checkout-manager");
        let _ = stop_tx.send(true);
        if tokio::time::timeout(config.shutdown_grace, futures::future::join_all(tasks)).await.is_err() {
            tracing::warn!(grace = ?config.shutdown_grace, "checkout-manager did not stop within its grace period; leases run out and unacked messages are redelivered");
        }
        ordermesh_db::close_pool(&pool).await;
        tracing::info!("checkout-manager stopped");
        match fatal {
            Some(sentence) => Err(anyhow::anyhow!(sentence)),
            None => Ok(()),
        }
    }
}
