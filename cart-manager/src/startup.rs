//! Building and running cart-manager: database, RabbitMQ, the job consumer, the outbox relay and the check of
//! each order's hand-over.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use ordermesh_bus::{Bus, Publisher, RpcClient, consumer::reply_publisher, handler_fn, outbox, spawn_consumer};
use ordermesh_db::connect_and_migrate;
use ordermesh_lifecycle::{Alarm, stopped};
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
        let metrics = metrics_server.metrics().clone();
        let (stop_tx, stop) = watch::channel(false);
        let bus = Bus::start(
            config.shared.amqp_url.expose().to_owned(),
            config.topology.clone(),
            metrics.clone(),
            stop.clone(),
        );
        let metrics_task = tokio::spawn(metrics_server.serve(bus.readiness(), stopped(stop.clone())));
        let publisher = Arc::new(Publisher::new(bus.clone()));
        let handoff = Arc::new(outbox::Handoff::default());
        let handover_alarm = Arc::new(Alarm::default());
        let ctx = CartContext {
            pool: pool.clone(),
            inventory: Inventory::new(&config.shared, config.shared.inventory_timeout, metrics.clone())?,
            topology: config.topology.clone(),
            outbox: handoff.clone(),
            handovers: handover_alarm.clone(),
            known: Arc::default(),
            metrics,
        };
        let handler = handler_fn(move |incoming| {
            let ctx = ctx.clone();
            async move { handler::handle(&ctx, incoming).await }
        });
        let replies = reply_publisher(&bus, stop.clone());
        let consumer =
            spawn_consumer(bus.clone(), replies, config.topology.cart_jobs(), config.consumer(), handler, stop.clone());
        let handovers = tokio::spawn(handover::run(
            pool.clone(),
            Arc::new(RpcClient::new(bus.clone())),
            config.topology.clone(),
            handoff.clone(),
            handover_alarm,
            stop.clone(),
        ));
        let relay = tokio::spawn(outbox::run_relay(pool.clone(), publisher, handoff, config.outbox_poll, stop.clone()));
        let pruner = tokio::spawn(prune(pool.clone(), stop.clone()));

        // A broker that holds the queues with other arguments stops the service once, with the fix in its words.
        let fatal = bus.until_stopped(shutdown).await;
        tracing::info!("shutting down cart-manager");
        let _ = stop_tx.send(true);
        // Jobs in hand finish (their deliveries are acked); anything not yet delivered stays on the queue.
        let stopped = tokio::time::timeout(config.shutdown_grace, async {
            tokio::join!(consumer, relay, handovers, pruner, metrics_task)
        })
        .await;
        if stopped.is_err() {
            tracing::warn!(grace = ?config.shutdown_grace, "cart-manager did not stop within its grace period; unacked jobs will be redelivered");
        }
        ordermesh_db::close_pool(&pool).await;
        tracing::info!("cart-manager stopped");
        match fatal {
            Some(sentence) => Err(anyhow::anyhow!(sentence)),
            None => Ok(()),
        }
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
