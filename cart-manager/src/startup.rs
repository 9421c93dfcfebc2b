//! Building and running cart-manager: database, RabbitMQ, the job consumer, the outbox relay and the check of
//! each order's hand-over.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use ordermesh_bus::{Built, Publisher, RpcClient, handler_fn, outbox};
use ordermesh_lifecycle::Alarm;
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
    built: Built,
}

impl Application {
    /// Prepares the database; RabbitMQ is connected in the background by `run_until_stopped`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let built = Built::new(
            "cart-manager",
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

    /// The database pool, for tests.
    pub fn pool(&self) -> &PgPool {
        self.built.pool()
    }

    /// Consumes cart jobs, relays the outbox and makes sure of hand-overs until `shutdown` resolves.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { config, built } = self;
        let (mut worker, pool) = built.start(config.shared.amqp_url.expose(), &config.topology);
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
