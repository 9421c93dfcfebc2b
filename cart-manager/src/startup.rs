//! Building and running cart-manager: database, RabbitMQ, the job consumer, the outbox relay and the check of
//! each order's hand-over.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use ordermesh_bus::{Publisher, RpcClient, Worker, handler_fn, outbox};
use ordermesh_db::connect_and_migrate;
use ordermesh_lifecycle::Alarm;
use ordermesh_telemetry::http::MetricsServer;
use sqlx::{PgPool, migrate::Migrator};
use tokio::sync::watch;

use crate::{
    cart,
    config::Config,
    handler::{self, CartContext},
    handover,
    inventory::Inventory,
};

/// cart's migrations, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/cart");

/// A built, not yet running cart-manager.
#[derive(Debug)]
pub struct Application {
    config: Config,
    pool: PgPool,
    metrics_server: MetricsServer,
}

impl Application {
    /// Prepares the database; RabbitMQ is connected in the background by `run_until_stopped`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = connect_and_migrate(&config.database, &MIGRATOR).await.context("preparing the cart database")?;
        let metrics_server =
            MetricsServer::for_service("cart-manager", config.metrics_addr, Config::default().metrics_addr).await?;
        ordermesh_db::watch_pool(metrics_server.metrics(), "cart", &pool);
        outbox::watch_backlog(metrics_server.metrics(), &pool);
        Ok(Self { config, pool, metrics_server })
    }

    /// Where `/metrics` and `/healthz` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_server.local_addr()
    }

    /// The database pool, for tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Consumes cart jobs, relays the outbox and makes sure of hand-overs until `shutdown` resolves.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { config, pool, metrics_server } = self;
        let mut worker =
            Worker::start("cart-manager", config.shared.amqp_url.expose(), &config.topology, metrics_server);
        let bus = worker.bus().clone();
        let publisher = Arc::new(Publisher::new(bus.clone()));
        let handoff = Arc::new(outbox::Handoff::default());
        let handover_alarm = Arc::new(Alarm::default());
        let ctx = CartContext {
            pool: pool.clone(),
            inventory: Inventory::new(&config.shared, config.shared.inventory_timeout, worker.metrics().clone())?,
            topology: config.topology.clone(),
            outbox: handoff.clone(),
            handovers: handover_alarm.clone(),
            metrics: worker.metrics().clone(),
        };
        let handler = handler_fn(move |incoming| {
            let ctx = ctx.clone();
            async move { handler::handle(&ctx, incoming).await }
        });
        worker.consume(worker.reply_publisher(), config.topology.cart_jobs(), config.consumer(), handler);
        let stop = worker.stop_signal();
        let rpc = Arc::new(RpcClient::new(bus));
        let topology = config.topology.clone();
        worker.spawn(handover::run(pool.clone(), rpc, topology, handoff.clone(), handover_alarm, stop.clone()));
        worker.spawn(outbox::run_relay(pool.clone(), publisher, handoff, config.outbox_poll, stop.clone()));
        worker.spawn(prune(pool.clone(), stop));
        // Jobs in hand finish (their deliveries are acked); anything not yet delivered stays on the queue.
        let left_behind = "unacked jobs will be redelivered";
        worker.run_until_stopped(shutdown, config.shutdown_grace, &pool, left_behind).await
    }
}

async fn prune(pool: PgPool, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = cart::prune_processed(&pool).await {
            tracing::warn!(error = %e, "pruning processed messages failed");
        }
    }
}
