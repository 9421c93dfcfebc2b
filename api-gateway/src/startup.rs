//! Building and running api-gateway: the listener, the RabbitMQ connection and the HTTP server.

use std::{
    future::{Future, IntoFuture},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use ordermesh_bus::{Bus, RpcClient};
use ordermesh_proto::InventoryClient;
use ordermesh_telemetry::Metrics;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    auth::Auth,
    config::{AuthMode, Config},
    keys,
    routes::{AppState, app},
    waiters::{self, Waiters},
};

/// A built, not yet serving api-gateway: the port is bound and RabbitMQ is being connected.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    /// HTTPS settings, when the gateway serves TLS itself.
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    state: AppState,
    stop: watch::Sender<bool>,
    /// How long in-flight requests may finish after shutdown is asked for.
    grace: Duration,
}

impl Application {
    /// Binds the listener and starts connecting to RabbitMQ in the background (it may start later).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let tls = config.tls.as_ref().map(crate::tls::server_config).transpose()?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("binding HTTP listener on {}", config.listen_addr))?;
        let pool = match config.auth {
            AuthMode::Required => Some(
                ordermesh_db::connect_and_migrate(&config.database, &keys::MIGRATOR)
                    .await
                    .context("preparing the gateway database (API keys)")?,
            ),
            AuthMode::Off => {
                tracing::warn!(
                    "GATEWAY_AUTH=off: every caller may use every route, and orders record channel direct; \
                     set GATEWAY_AUTH=required to ask for API keys (made with `keys create`)"
                );
                None
            }
        };
        let auth = Arc::new(
            Auth::new(config.auth, pool, config.key_rate_per_second, config.session_lifetime).over_tls(tls.is_some()),
        );
        let (stop, stop_rx) = watch::channel(false);
        let metrics = Metrics::new("api-gateway");
        let bus = Bus::start(
            config.shared.amqp_url.expose().to_owned(),
            config.topology.clone(),
            metrics.clone(),
            stop_rx.clone(),
        );
        let waiters = Arc::new(Waiters::default());
        waiters::watch_open_orders(&metrics, &waiters);
        tokio::spawn(waiters::listen(bus.clone(), config.topology.clone(), waiters.clone(), stop_rx));
        let state = AppState {
            rpc: Arc::new(RpcClient::new(bus.clone())),
            bus,
            topology: config.topology.clone(),
            inventory: InventoryClient::new(&config.shared, config.shared.inventory_timeout, metrics.clone())?,
            request_timeout: config.request_timeout,
            max_wait: config.max_wait,
            wait_poll: config.wait_poll,
            waiters,
            max_in_flight: config.max_in_flight,
            max_waiting: config.max_waiting,
            max_open_orders: config.max_open_orders,
            metrics,
            auth,
        };
        Ok(Self { listener, tls, state, stop, grace: config.shutdown_grace })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves HTTP until `shutdown` resolves, then lets in-flight requests finish (bounded).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { listener, tls, state, stop, grace } = self;
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let bus = state.bus.clone();
        let (fatal_tx, mut fatal_rx) = tokio::sync::oneshot::channel::<String>();
        let stopping = async move {
            // A broker that holds the queues with other arguments stops the gateway once, with the fix in its words.
            if let Some(sentence) = bus.until_stopped(shutdown).await {
                let _ = fatal_tx.send(sentence);
            }
            tracing::info!("shutting down api-gateway");
            let _ = stopping_tx.send(());
        };
        let server: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match tls {
            Some(config) => Box::pin(
                axum::serve(crate::tls::TlsListener::new(listener, config)?, app(state))
                    .with_graceful_shutdown(stopping)
                    .into_future(),
            ),
            None => Box::pin(axum::serve(listener, app(state)).with_graceful_shutdown(stopping).into_future()),
        };
        let result = tokio::select! {
            r = server => r.context("HTTP server failed"),
            _ = async { let _ = stopping_rx.await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "requests in flight did not finish within the grace period");
                Ok(())
            }
        };
        let _ = stop.send(true);
        tracing::info!("api-gateway stopped");
        match fatal_rx.try_recv() {
            Ok(sentence) => Err(anyhow::anyhow!(sentence)),
            Err(_) => result,
        }
    }
}
