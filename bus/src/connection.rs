//! One AMQP connection per process, kept alive by a supervisor that reconnects with backoff.

use std::{sync::Arc, time::Duration};

use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::watch;

use ordermesh_telemetry::Metrics;

use crate::topology::Topology;

/// Why the bus could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// No connection to RabbitMQ right now; the supervisor is reconnecting.
    #[error("RabbitMQ is unreachable")]
    Unavailable,
    /// The broker refused (nacked) a publish.
    #[error("RabbitMQ refused the message")]
    Nacked,
    /// The broker did not confirm in time.
    #[error("RabbitMQ did not confirm in time")]
    Timeout,
    /// A protocol or I/O error on the channel.
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
}

/// A handle on the process's RabbitMQ connection; cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    /// The current connection, `None` while (re)connecting.
    current: watch::Receiver<Option<Arc<Connection>>>,
    /// The names this process uses.
    topology: Topology,
    /// Where publishers and consumers on this connection count their messages.
    metrics: Metrics,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("topology", &self.inner.topology).field("connected", &self.is_connected()).finish()
    }
}

/// How often the supervisor checks that the connection is still up.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// The first wait after a failed connection attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between two connection attempts. A refused connection costs next to nothing, and the
/// first checkout after a broker restart must go through within a second, so this stays short.
const MAX_BACKOFF: Duration = Duration::from_millis(250);
/// Deadline of the whole connect (TCP, AMQP handshake, topology): a black-holed broker must not hang us.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of opening a channel (and putting it in confirm mode).
pub const CHANNEL_TIMEOUT: Duration = Duration::from_secs(2);

impl Bus {
    /// Starts the supervisor and returns at once: the process may start before RabbitMQ does.
    /// The topology is declared on every (re)connect. The supervisor stops when `stop` becomes true.
    pub fn start(url: String, topology: Topology, metrics: Metrics, mut stop: watch::Receiver<bool>) -> Self {
        let (tx, rx) = watch::channel(None);
        let declare = topology.clone();
        tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            let mut failures = 0u32;
            loop {
                if *stop.borrow() {
                    break;
                }
                match connect(&url, &declare).await {
                    Ok(conn) => {
                        let conn = Arc::new(conn);
                        tracing::info!(after_failures = failures, "connected to RabbitMQ");
                        backoff = FIRST_BACKOFF;
                        failures = 0;
                        let _ = tx.send(Some(conn.clone()));
                        loop {
                            tokio::select! {
                                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                                _ = stop.changed() => {}
                            }
                            if *stop.borrow() {
                                let _ = tx.send(None);
                                let _ = conn.close(200, "shutting down".into()).await;
                                return;
                            }
                            if !conn.status().connected() {
                                break;
                            }
                        }
                        tracing::warn!("lost the RabbitMQ connection; reconnecting");
                        let _ = tx.send(None);
                    }
                    Err(err) => {
                        failures = failures.saturating_add(1);
                        // Retries are frequent; the log says so on the 1st, 2nd, 4th, 8th ... failure.
                        if failures.is_power_of_two() {
                            tracing::warn!(error = %err, failures, "RabbitMQ not reachable, retrying every {MAX_BACKOFF:?}");
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.changed() => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            let _ = tx.send(None);
        });
        Self { inner: Arc::new(Inner { current: rx, topology, metrics }) }
    }

    /// The names this process uses.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// The service's metrics, where messages are counted.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Readiness for a `/healthz`: connected to RabbitMQ.
    pub fn readiness(&self) -> ordermesh_telemetry::http::Readiness {
        let bus = self.clone();
        Arc::new(move || bus.is_connected())
    }

    /// Resolves once the connection that is current when called is gone (the supervisor notices within its
    /// watch interval), even if a new one is already up by then.
    pub async fn disconnected(&self) {
        let mut current = self.inner.current.clone();
        let Some(connection) = current.borrow_and_update().clone() else { return };
        let _ = current
            .wait_for(|now| !now.as_ref().is_some_and(|c| Arc::ptr_eq(c, &connection) && c.status().connected()))
            .await;
    }

    /// Whether a connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.inner.current.borrow().as_ref().is_some_and(|c| c.status().connected())
    }

    /// A new channel on the current connection, or `Unavailable` at once if there is none.
    pub async fn channel(&self) -> Result<Channel, BusError> {
        let conn = self.inner.current.borrow().clone().ok_or(BusError::Unavailable)?;
        if !conn.status().connected() {
            return Err(BusError::Unavailable);
        }
        match tokio::time::timeout(CHANNEL_TIMEOUT, conn.create_channel()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "could not open a channel");
                Err(BusError::Unavailable)
            }
            Err(_) => {
                tracing::warn!("opening a channel timed out");
                Err(BusError::Unavailable)
            }
        }
    }

    /// Waits until a connection is up (or `stop` fires), then opens a channel on it.
    pub async fn wait_for_channel(&self, stop: &mut watch::Receiver<bool>) -> Option<Channel> {
        let mut current = self.inner.current.clone();
        loop {
            if *stop.borrow() {
                return None;
            }
            if let Ok(channel) = self.channel().await {
                return Some(channel);
            }
            tokio::select! {
                _ = current.changed() => {}
                _ = stop.changed() => {}
                // A connection can be up in the watch and still refuse a channel for a moment.
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
}

async fn connect(url: &str, topology: &Topology) -> Result<Connection, String> {
    let attempt = async {
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        topology.declare(&channel).await?;
        let _ = channel.close(200, "declared".into()).await;
        Ok::<_, lapin::Error>(conn)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
    }
}
