//! One AMQP connection per process, kept alive by a supervisor that reconnects with backoff, to any of the
//! broker addresses it was given (a cluster's nodes).

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
    /// Why the supervisor gave up for good (queues declared with other arguments): the service must stop.
    fatal: watch::Receiver<Option<String>>,
    /// The broker addresses it connects to, for a sibling connection ([`Bus::sibling`]).
    addresses: Vec<String>,
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
/// Deadline of reaching one broker address (TCP and AMQP handshake): a black-holed node must not keep us from
/// trying the next one for long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of declaring the topology once connected: quorum queues made for the first time on a cluster
/// take a while (each starts a Raft group on every node).
pub const DECLARE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest random pause before reconnecting after a lost connection, so that a fleet of services that
/// lost the same node does not reach the next one in the same instant.
const RECONNECT_JITTER: Duration = Duration::from_millis(100);
/// Deadline of opening a channel (and putting it in confirm mode).
pub const CHANNEL_TIMEOUT: Duration = Duration::from_secs(2);

impl Bus {
    /// Starts the supervisor and returns at once: the process may start before RabbitMQ does. `url` is one
    /// AMQP URL or several, comma-separated ([`broker_addresses`]); the first that answers is used, and after
    /// a lost connection the next ones are tried first. The topology is declared on every (re)connect. The
    /// supervisor stops when `stop` becomes true, or for good when the broker holds the queues with other
    /// arguments ([`Bus::fatal`]).
    pub fn start(url: String, topology: Topology, metrics: Metrics, stop: watch::Receiver<bool>) -> Self {
        Self::supervise(broker_addresses(&url), topology, metrics, true, stop)
    }

    /// A bus that never connects: [`Bus::is_connected`] is false and every channel `Unavailable`. For a router
    /// tested without a broker (its readiness and its dead-letter views then say so).
    pub fn detached(topology: Topology, metrics: Metrics) -> Self {
        let (_, current) = watch::channel(None);
        let (_, fatal) = watch::channel(None);
        Self { inner: Arc::new(Inner { current, fatal, addresses: Vec::new(), topology, metrics }) }
    }

    /// Another connection to the same brokers, with the same names and metrics, that declares nothing (this
    /// bus does): for traffic that must not share this connection's fate (see `consumer::reply_publisher`).
    pub fn sibling(&self, stop: watch::Receiver<bool>) -> Self {
        let inner = &self.inner;
        Self::supervise(inner.addresses.clone(), inner.topology.clone(), inner.metrics.clone(), false, stop)
    }

    fn supervise(
        addresses: Vec<String>,
        topology: Topology,
        metrics: Metrics,
        declares: bool,
        mut stop: watch::Receiver<bool>,
    ) -> Self {
        let (tx, rx) = watch::channel(None);
        let (fatal_tx, fatal) = watch::channel(None);
        let declare = declares.then(|| topology.clone());
        let supervised = addresses.clone();
        tokio::spawn(async move {
            let addresses = supervised;
            let mut backoff = FIRST_BACKOFF;
            let mut failures = 0u32;
            // The address tried first on the next attempt.
            let mut next = 0usize;
            loop {
                if *stop.borrow() {
                    break;
                }
                match connect_any(&addresses, next, declare.as_ref()).await {
                    Ok((index, conn)) => {
                        let conn = Arc::new(conn);
                        tracing::info!(after_failures = failures, broker = %ordermesh_config::redact(&addresses[index]), "connected to RabbitMQ");
                        backoff = FIRST_BACKOFF;
                        failures = 0;
                        // A node that was lost is tried last next time.
                        next = (index + 1) % addresses.len();
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
                        tokio::time::sleep(jitter(RECONNECT_JITTER)).await;
                    }
                    Err(ConnectError::Mismatch(sentence)) => {
                        tracing::error!("{sentence}");
                        let _ = fatal_tx.send(Some(sentence));
                        break;
                    }
                    Err(ConnectError::Failed(err)) => {
                        failures = failures.saturating_add(1);
                        // Retries are frequent; the log says so on the 1st, 2nd, 4th, 8th ... failure.
                        if failures.is_power_of_two() {
                            tracing::warn!(error = %err, failures, "RabbitMQ not reachable, retrying every {MAX_BACKOFF:?}");
                        }
                        // Between half the backoff and all of it, so that services do not retry in step.
                        let pause = backoff / 2 + jitter(backoff / 2);
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = stop.changed() => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            let _ = tx.send(None);
        });
        Self { inner: Arc::new(Inner { current: rx, fatal, addresses, topology, metrics }) }
    }

    /// Resolves, with the sentence the service must stop with, once the supervisor has given up for good:
    /// the broker holds ordermesh's queues with other arguments (classic queues where quorum queues are
    /// configured), which no retry can mend. Never resolves otherwise.
    pub async fn fatal(&self) -> String {
        let mut fatal = self.inner.fatal.clone();
        let sentence = fatal.wait_for(Option::is_some).await.ok().and_then(|reason| reason.clone());
        match sentence {
            Some(sentence) => sentence,
            // The supervisor ended without a fatal error (it was stopped): nothing to report, ever.
            None => std::future::pending().await,
        }
    }

    /// Waits for `shutdown`, or for the supervisor to give up for good: then returns the sentence the service
    /// must stop with ([`Bus::fatal`]).
    pub async fn until_stopped(&self, shutdown: impl std::future::Future<Output = ()>) -> Option<String> {
        tokio::select! {
            () = shutdown => None,
            sentence = self.fatal() => Some(sentence),
        }
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

/// Why no connection was made.
enum ConnectError {
    /// Every address failed this round; try again.
    Failed(String),
    /// The broker holds the queues with other arguments: the sentence to stop with.
    Mismatch(String),
}

/// Tries each address once, starting at `first`, declaring `topology` when given; returns the index of the
/// one connected to.
async fn connect_any(
    addresses: &[String],
    first: usize,
    topology: Option<&Topology>,
) -> Result<(usize, Connection), ConnectError> {
    let mut errors = Vec::new();
    for offset in 0..addresses.len() {
        let index = (first + offset) % addresses.len();
        match connect(&addresses[index], topology).await {
            Ok(conn) => return Ok((index, conn)),
            Err(ConnectError::Failed(err)) => {
                errors.push(format!("{}: {err}", ordermesh_config::redact(&addresses[index])))
            }
            Err(mismatch) => return Err(mismatch),
        }
    }
    Err(ConnectError::Failed(errors.join("; ")))
}

/// Connects to the first of `url`'s broker addresses ([`broker_addresses`]) that answers, declaring nothing:
/// for tools (the audit, the queue migration) that need one connection and no supervisor.
pub async fn connect_first(url: &str) -> Result<Connection, String> {
    let mut errors = Vec::new();
    for address in broker_addresses(url) {
        match open(&address).await {
            Ok(conn) => return Ok(conn),
            Err(err) => errors.push(format!("{}: {err}", ordermesh_config::redact(&address))),
        }
    }
    Err(errors.join("; "))
}

/// TCP (and TLS, for `amqps://`) and the AMQP handshake to one address, bounded.
async fn open(url: &str) -> Result<Connection, String> {
    let (url, tls) = tls_of(url)?;
    let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
    let connect = Connection::connect_with_config(&url, ConnectionProperties::default(), tls, runtime);
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(conn) => conn.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
    }
}

/// The TLS settings of an `amqps://` URL, in the query parameters RabbitMQ's own clients read:
/// `cacertfile` (the CA the broker's certificate is verified against; without it, the public web's roots),
/// `certfile` and `keyfile` (a client certificate, for RabbitMQ's x509 authentication). Returns the URL
/// without them (the AMQP parser does not know them) and the settings read from the files. A file that
/// cannot be read is an error naming the parameter; its contents never appear in one.
pub fn tls_of(url: &str) -> Result<(String, lapin::tcp::OwnedTLSConfig), String> {
    let mut tls = lapin::tcp::OwnedTLSConfig::default();
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_owned(), tls)) };
    let (mut kept, mut cert, mut key) = (Vec::new(), None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let read =
            |what: &str| std::fs::read(value).map_err(|e| format!("AMQP_URL's {what}={value:?} cannot be read: {e}"));
        match name {
            "cacertfile" => {
                let pem = String::from_utf8(read(name)?)
                    .map_err(|_| format!("AMQP_URL's cacertfile={value:?} is not PEM"))?;
                tls.cert_chain = Some(pem);
            }
            "certfile" => cert = Some(read(name)?),
            "keyfile" => key = Some(read(name)?),
            _ => kept.push(pair),
        }
    }
    match (cert, key) {
        (Some(pem), Some(key)) => tls.identity = Some(lapin::tcp::OwnedIdentity::PKCS8 { pem, key }),
        (None, None) => {}
        _ => return Err("AMQP_URL names a certfile without a keyfile, or a keyfile without a certfile".into()),
    }
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, tls))
}

async fn connect(url: &str, topology: Option<&Topology>) -> Result<Connection, ConnectError> {
    let failed = |e: lapin::Error| ConnectError::Failed(e.to_string());
    let conn = open(url).await.map_err(ConnectError::Failed)?;
    let Some(topology) = topology else { return Ok(conn) };
    let declare = async {
        let channel = conn.create_channel().await?;
        topology.declare(&channel).await?;
        let _ = channel.close(200, "declared".into()).await;
        Ok::<_, lapin::Error>(())
    };
    match tokio::time::timeout(DECLARE_TIMEOUT, declare).await {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(err)) if crate::topology::is_mismatch(&err) => {
            let _ = conn.close(200, "queues of another kind".into()).await;
            Err(ConnectError::Mismatch(crate::topology::mismatch_sentence(&err, topology.queue_type())))
        }
        Ok(Err(err)) => Err(failed(err)),
        Err(_) => Err(ConnectError::Failed(format!("declaring the queues took over {DECLARE_TIMEOUT:?}"))),
    }
}

/// A random pause of up to `max`.
fn jitter(max: Duration) -> Duration {
    use rand::Rng;
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(if ms == 0 { 0 } else { rand::rng().random_range(0..=ms) })
}

/// The broker addresses of an `AMQP_URL`: one URL, or several comma-separated, as the RabbitMQ clients of
/// other languages take a cluster's nodes (Spring's `addresses`, the Java client's address list). An entry
/// that is only `host` or `host:port` takes its scheme, credentials and virtual host from the first entry:
/// `amqp://user:pass@node-1:5672/%2f,node-2:5672,node-3:5672`.
pub fn broker_addresses(url: &str) -> Vec<String> {
    let entries: Vec<&str> = url.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    let Some(first) = entries.first() else { return vec![url.to_owned()] };
    // scheme://userinfo@ before the host, and /vhost?query after it, of the first entry.
    let (prefix, suffix) = match first.find("://") {
        Some(scheme_end) => {
            let rest = &first[scheme_end + 3..];
            let host_start = rest.rfind('@').map_or(0, |at| at + 1);
            let host_end = rest[host_start..].find(['/', '?']).map_or(rest.len(), |i| host_start + i);
            (first[..scheme_end + 3 + host_start].to_owned(), rest[host_end..].to_owned())
        }
        None => ("amqp://".to_owned(), String::new()),
    };
    entries
        .iter()
        .map(|entry| if entry.contains("://") { (*entry).to_owned() } else { format!("{prefix}{entry}{suffix}") })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_or_a_list_of_nodes() {
        assert_eq!(broker_addresses("amqp://g:p@h:5672/%2f"), vec!["amqp://g:p@h:5672/%2f"]);
        assert_eq!(
            broker_addresses("amqp://g:p@n1:5672/%2f?heartbeat=5, n2:5673 ,n3"),
            vec![
                "amqp://g:p@n1:5672/%2f?heartbeat=5",
                "amqp://g:p@n2:5673/%2f?heartbeat=5",
                "amqp://g:p@n3/%2f?heartbeat=5"
            ]
        );
        assert_eq!(broker_addresses("amqp://a:b@n1/vh,amqp://c:d@n2/vh"), vec!["amqp://a:b@n1/vh", "amqp://c:d@n2/vh"]);
        assert_eq!(broker_addresses("amqp://n1,n2:5673"), vec!["amqp://n1", "amqp://n2:5673"]);
    }

    #[test]
    fn tls_files_come_from_the_query_and_leave_the_url() {
        let (url, tls) = tls_of("amqp://g:p@h:5672/%2f?heartbeat=5").unwrap();
        assert_eq!(url, "amqp://g:p@h:5672/%2f?heartbeat=5");
        assert!(tls.cert_chain.is_none() && tls.identity.is_none());

        let dir = std::env::temp_dir().join(format!("om-amqp-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let url = format!("amqps://g:p@h:5671/%2f?cacertfile={}&heartbeat=5", ca.display());
        let (url, tls) = tls_of(&url).unwrap();
        assert_eq!(url, "amqps://g:p@h:5671/%2f?heartbeat=5");
        assert!(tls.cert_chain.is_some_and(|pem| pem.starts_with("-----BEGIN")));

        let err = tls_of("amqps://h/%2f?cacertfile=/no/such/ca.pem").unwrap_err();
        assert!(err.contains("cacertfile") && err.contains("/no/such/ca.pem"), "{err}");
        let err = tls_of(&format!("amqps://h/%2f?certfile={}", ca.display())).unwrap_err();
        assert!(err.contains("keyfile"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(100)) <= Duration::from_millis(100));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
