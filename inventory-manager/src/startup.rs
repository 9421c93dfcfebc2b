//! Building and running inventory-manager: database, migrations, listener, gRPC server, background tasks.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use ordermesh_config::AuthMode;
use ordermesh_db::connect_and_migrate;
use ordermesh_lifecycle::stopped;
use ordermesh_proto::inventory::v1::{FILE_DESCRIPTOR_SET, inventory_service_server::InventoryServiceServer};
use ordermesh_telemetry::{grpc::GrpcMetricsLayer, http::MetricsServer};
use sqlx::{PgPool, migrate::Migrator};
use tokio::{net::TcpListener, sync::watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    server::NamedService,
    transport::{Certificate, Identity, ServerTlsConfig},
};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{auth::Gate, config::Config, grpc::InventoryGrpc, metrics::StockMetrics, sweeper};

/// inventory's migrations, embedded at compile time; they run at every start and are append-only.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/inventory");

/// A built, not yet running inventory-manager: the database is migrated and the port is bound.
#[derive(Debug)]
pub struct Application {
    /// Bound in `build` so callers (tests) can read the port before serving starts.
    listener: TcpListener,
    /// Shared by the RPCs, the sweeper and the health probe.
    pool: PgPool,
    /// Kept for the intervals and TTLs that `run_until_stopped` hands out.
    config: Config,
    metrics_server: MetricsServer,
}

impl Application {
    /// Connects to (and if asked, creates) the database, runs migrations and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool =
            connect_and_migrate(&config.database, &MIGRATOR).await.context("preparing the inventory database")?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("binding gRPC listener on {}", config.listen_addr))?;
        let metrics_server =
            MetricsServer::for_service("inventory-manager", config.metrics_addr, Config::default().metrics_addr)
                .await?;
        ordermesh_db::watch_pool(metrics_server.metrics(), "inventory", &pool);
        Ok(Self { listener, pool, config, metrics_server })
    }

    /// Where `/metrics` and `/healthz` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_server.local_addr()
    }

    /// The address actually bound (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The database pool, for tests and tools that look at the stored state.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves gRPC, sweeps expired reservations and reports health until `shutdown` resolves.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { listener, pool, config, metrics_server } = self;
        let metrics = metrics_server.metrics().clone();
        let stock_metrics = StockMetrics::register(&metrics, &pool);
        let (health, health_service) = tonic_health::server::health_reporter();
        // Migrations have run and the pool is connected: the service is ready.
        health.set_serving::<InventoryServiceServer<InventoryGrpc>>().await;

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // So that clients can decode the google.rpc error details this service sends.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        // grpcurl before 1.9 (the one PyPI ships) only speaks v1alpha.
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let sweeps = Arc::new(ordermesh_lifecycle::Alarm::default());
        if config.auth == AuthMode::Off {
            tracing::warn!("INVENTORY_AUTH=off: anyone who reaches this port may change stock and prices");
        }
        let gate = Arc::new(Gate::new(config.auth, pool.clone()));
        let inventory = InventoryGrpc::new(
            pool.clone(),
            config.default_ttl,
            config.max_ttl,
            sweeps.clone(),
            stock_metrics.clone(),
            gate,
        );

        let (stop_tx, stop_rx) = watch::channel(false);
        let sweeper =
            tokio::spawn(sweeper::run(pool.clone(), sweeps, config.sweep_interval, stock_metrics, stop_rx.clone()));
        // Ready when the database answers, as the gRPC health service says.
        let serving = Arc::new(AtomicBool::new(true));
        let ready = {
            let serving = serving.clone();
            Arc::new(move || serving.load(Ordering::Relaxed)) as ordermesh_telemetry::http::Readiness
        };
        let metrics_task = tokio::spawn(metrics_server.serve(ready, stopped(stop_rx.clone())));
        let prober = tokio::spawn(probe_database(pool.clone(), health, serving, config.health_interval, stop_rx));

        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down inventory-manager");
            let _ = stopping_tx.send(());
        };
        let grace = config.shutdown_grace;
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = &config.tls {
            let mut settings =
                ServerTlsConfig::new().identity(Identity::from_pem(&tls.identity.cert_pem, &tls.identity.key_pem));
            if let Some(ca) = &tls.client_ca {
                settings = settings.client_ca_root(Certificate::from_pem(&ca.pem));
            }
            server = server.tls_config(settings).context("INVENTORY_TLS_CERT_FILE / INVENTORY_TLS_KEY_FILE")?;
        }
        let serve = server
            .timeout(config.request_timeout)
            .concurrency_limit_per_connection(config.max_in_flight_per_connection)
            .load_shed(true)
            .layer(GrpcMetricsLayer::server(metrics))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(InventoryServiceServer::new(inventory))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown);
        tokio::pin!(serve);

        // Once shutdown is asked for, in-flight RPCs get a bounded grace period.
        let result = tokio::select! {
            r = &mut serve => r,
            _ = async { let _ = stopping_rx.await; tokio::time::sleep(grace).await } => {
                tracing::warn!("in-flight RPCs did not finish within the grace period");
                Ok(())
            }
        };
        let _ = stop_tx.send(true);
        let _ = tokio::join!(sweeper, prober, metrics_task);
        ordermesh_db::close_pool(&pool).await;
        tracing::info!("inventory-manager stopped");
        result.context("gRPC server failed")
    }
}

/// Keeps the health status true to the database: NOT_SERVING while it does not answer.
async fn probe_database(
    pool: PgPool,
    health: HealthReporter,
    serving_flag: Arc<AtomicBool>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let service = <InventoryServiceServer<InventoryGrpc> as NamedService>::NAME;
    let mut serving = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let ok = tokio::time::timeout(interval, sqlx::query_scalar!("SELECT 1 AS alive").fetch_one(&pool))
            .await
            .is_ok_and(|r| r.is_ok());
        if ok != serving {
            serving = ok;
            serving_flag.store(ok, Ordering::Relaxed);
            let status = if ok { ServingStatus::Serving } else { ServingStatus::NotServing };
            tracing::warn!(?status, "database health changed");
            health.set_service_status("", status).await;
            health.set_service_status(service, status).await;
        }
    }
}
