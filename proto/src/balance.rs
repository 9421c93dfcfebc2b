//! A gRPC channel that spreads calls, one by one, over every address a service's name resolves to.
//!
//! HTTP/2 keeps one long-lived connection, so a client of one `tonic` channel behind a Kubernetes `ClusterIP`
//! sends every call to the one replica it first reached. This channel instead resolves each URL it was given
//! (a headless Service's name resolves to every ready replica) and re-resolves it every few seconds, keeps a
//! lazy connection per address, and sends each call to the less busy of two addresses picked at random
//! ("power of two choices", by calls in flight). An address whose call fails in transport (refused, reset)
//! leaves the rotation at once; it comes back when a TCP connection to it succeeds again, or when the name
//! no longer resolves to it it is dropped.

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, RwLock, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tonic::{
    body::Body,
    codegen::{Service, StdError, http},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

/// How often the names are resolved again (replicas come and go).
const RESOLVE_EVERY: Duration = Duration::from_secs(5);
/// How often an address out of the rotation is probed.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// One address and its connection.
#[derive(Debug)]
struct Backend {
    /// Where it is.
    addr: SocketAddr,
    /// Its lazy connection (reconnects on demand).
    channel: Channel,
    /// Calls sent and not answered yet: the load the picker compares.
    in_flight: AtomicUsize,
    /// Out of the rotation since a call failed in transport, until a probe reaches it again.
    down: AtomicBool,
}

/// What every clone of a [`Balanced`] shares.
#[derive(Debug)]
struct Inner {
    /// The URLs as given: scheme and host are kept for each address's endpoint.
    targets: Vec<Target>,
    /// Per-call deadline and connect timeout of every endpoint.
    timeout: Duration,
    /// TLS for `https://` targets (the CA to verify against, this client's certificate), checked at start.
    tls: Option<ClientTlsConfig>,
    /// The addresses now; replaced as a whole by the resolver.
    backends: RwLock<Vec<Arc<Backend>>>,
    /// Whether a resolution has finished (calls before the first wait for it).
    resolved: tokio::sync::watch::Sender<bool>,
}

/// One URL of the list.
#[derive(Debug, Clone)]
struct Target {
    /// `http` or `https`.
    scheme: String,
    /// The name (or address) to resolve.
    host: String,
    /// The port.
    port: u16,
    /// The URL as given: the `:authority` of calls to any of its addresses.
    origin: http::Uri,
}

/// What a channel fails to be built with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A channel balancing each call over the addresses of one or more URLs; cheap to clone.
#[derive(Debug, Clone)]
pub struct Balanced {
    inner: Arc<Inner>,
    /// The `authorization` header every call carries, if any (marked sensitive: never logged).
    authorization: Option<http::HeaderValue>,
}

impl Balanced {
    /// A channel for `urls`: one URL or several, comma-separated (`http://inventory:50051`, or
    /// `http://10.0.0.5:50051,http://10.0.0.6:50051`). Each call is cut after `timeout`. Must be called
    /// within a tokio runtime: the resolver runs as a task, for as long as a clone of the channel lives.
    pub fn new(urls: &str, timeout: Duration) -> Result<Self, BoxError> {
        Self::with_tls(urls, timeout, &ordermesh_credentials::tls::ClientTls::default())
    }

    /// The same, speaking TLS to `https://` URLs: verifying the server against `tls.ca` (else the public
    /// web's roots) under the URL's host name, and presenting `tls.identity` where the server asks for a
    /// client certificate (mutual TLS).
    pub fn with_tls(
        urls: &str,
        timeout: Duration,
        tls: &ordermesh_credentials::tls::ClientTls,
    ) -> Result<Self, BoxError> {
        let mut targets = Vec::new();
        for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            // Validates the URL the way a plain channel would, so a bad one fails at start.
            let endpoint = Endpoint::from_shared(url.to_owned())?;
            let uri = endpoint.uri().clone();
            let scheme = uri.scheme_str().unwrap_or("http").to_owned();
            let default_port = if scheme == "https" { 443 } else { 80 };
            let host = uri.host().unwrap_or("127.0.0.1").trim_start_matches('[').trim_end_matches(']').to_owned();
            targets.push(Target { scheme, host, port: uri.port_u16().unwrap_or(default_port), origin: uri });
        }
        if targets.is_empty() {
            // An empty URL: let the endpoint parser say what is wrong with it.
            Endpoint::from_shared(urls.to_owned())?;
        }
        let tls = if targets.iter().any(|t| t.scheme == "https") {
            let mut config = ClientTlsConfig::new();
            config = match &tls.ca {
                Some(ca) => config.ca_certificate(Certificate::from_pem(&ca.pem)),
                None => config.with_webpki_roots(),
            };
            if let Some(identity) = &tls.identity {
                config = config.identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem));
            }
            // Refused here, at start, rather than at the first call.
            Endpoint::from_static("https://check.invalid").tls_config(config.clone())?;
            Some(config)
        } else {
            None
        };
        let (resolved, _) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner { targets, timeout, tls, backends: RwLock::default(), resolved });
        // Addresses given as IP literals are known at once; names are resolved by the task.
        inner.install(inner.literal_addresses());
        tokio::spawn(maintain(Arc::downgrade(&inner)));
        Ok(Self { inner, authorization: None })
    }

    /// The same channel, every call of which presents `token` as `authorization: Bearer <token>`.
    pub fn with_bearer_token(mut self, token: &str) -> Result<Self, BoxError> {
        let mut value = http::HeaderValue::try_from(format!("Bearer {}", token.trim()))
            .map_err(|_| "the token holds characters a header cannot carry")?;
        value.set_sensitive(true);
        self.authorization = Some(value);
        Ok(self)
    }
}

impl Inner {
    /// Every target's address when all targets are IP literals; none otherwise (the resolver will do).
    fn literal_addresses(&self) -> Vec<(usize, SocketAddr)> {
        let literal: Option<Vec<_>> = self
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| t.host.parse::<std::net::IpAddr>().ok().map(|ip| (i, SocketAddr::new(ip, t.port))))
            .collect();
        literal.unwrap_or_default()
    }

    /// Makes `found` the rotation: known addresses keep their connection and state, new ones get a lazy
    /// connection, vanished ones are dropped.
    fn install(&self, found: Vec<(usize, SocketAddr)>) {
        if found.is_empty() {
            return;
        }
        let mut backends = self.backends.write().expect("backends lock");
        let known: HashMap<SocketAddr, Arc<Backend>> = backends.iter().map(|b| (b.addr, b.clone())).collect();
        let mut next = Vec::with_capacity(found.len());
        for (target, addr) in found {
            if next.iter().any(|b: &Arc<Backend>| b.addr == addr) {
                continue;
            }
            let backend =
                known.get(&addr).cloned().unwrap_or_else(|| Arc::new(self.backend(&self.targets[target], addr)));
            next.push(backend);
        }
        *backends = next;
        drop(backends);
        self.resolved.send_replace(true);
    }

    fn backend(&self, target: &Target, addr: SocketAddr) -> Backend {
        let mut endpoint =
            Endpoint::from_shared(format!("{}://{addr}", target.scheme)).expect("an address URL is valid");
        if let (Some(tls), "https") = (&self.tls, target.scheme.as_str()) {
            // Connected by address, verified by the name the URL gave.
            endpoint = endpoint
                .tls_config(tls.clone().domain_name(target.host.clone()))
                .expect("a TLS configuration checked at start");
        }
        let endpoint = endpoint
            .origin(target.origin.clone())
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        Backend { addr, channel: endpoint.connect_lazy(), in_flight: AtomicUsize::new(0), down: AtomicBool::new(false) }
    }

    /// The less busy of two backends in the rotation picked at random; with none in the rotation, any (its
    /// call then fails fast, as a plain channel's would).
    fn pick(&self) -> Option<Arc<Backend>> {
        use rand::Rng;
        let backends = self.backends.read().expect("backends lock");
        let up: Vec<&Arc<Backend>> = backends.iter().filter(|b| !b.down.load(Ordering::Relaxed)).collect();
        let pool: Vec<&Arc<Backend>> = if up.is_empty() { backends.iter().collect() } else { up };
        let mut rng = rand::rng();
        match pool.len() {
            0 => None,
            1 => Some(pool[0].clone()),
            n => {
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                let (a, b) = (pool[a], pool[b]);
                let load = |x: &Backend| x.in_flight.load(Ordering::Relaxed);
                Some(if load(b) < load(a) { b.clone() } else { a.clone() })
            }
        }
    }
}

/// Resolves the names every [`RESOLVE_EVERY`] and probes the addresses out of the rotation every
/// [`PROBE_EVERY`], until the last clone of the channel is dropped.
async fn maintain(inner: Weak<Inner>) {
    let mut last_resolve: Option<tokio::time::Instant> = None;
    loop {
        let Some(strong) = inner.upgrade() else { return };
        if last_resolve.is_none_or(|at| at.elapsed() >= RESOLVE_EVERY) {
            last_resolve = Some(tokio::time::Instant::now());
            let mut found = Vec::new();
            for (i, target) in strong.targets.iter().enumerate() {
                let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
                // A failed lookup keeps the addresses known so far: DNS trouble must not empty the rotation.
                if let Ok(Ok(addrs)) = tokio::time::timeout(strong.timeout, lookup).await {
                    found.extend(addrs.map(|a| (i, a)));
                }
            }
            strong.install(found);
        }
        let down: Vec<Arc<Backend>> = {
            let backends = strong.backends.read().expect("backends lock");
            backends.iter().filter(|b| b.down.load(Ordering::Relaxed)).cloned().collect()
        };
        let timeout = strong.timeout;
        drop(strong);
        for backend in down {
            if let Ok(Ok(_)) = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(backend.addr)).await {
                backend.down.store(false, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

impl Service<http::Request<Body>> for Balanced {
    type Response = http::Response<Body>;
    type Error = StdError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call waits for its own backend's readiness in its future.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        if let Some(value) = &self.authorization {
            request.headers_mut().insert(http::header::AUTHORIZATION, value.clone());
        }
        Box::pin(async move {
            let mut resolved = inner.resolved.subscribe();
            let first = tokio::time::timeout(inner.timeout, resolved.wait_for(|r| *r)).await;
            let backend = match (first, inner.pick()) {
                (Ok(Ok(_)), Some(backend)) => backend,
                _ => {
                    let names: Vec<&str> = inner.targets.iter().map(|t| t.host.as_str()).collect();
                    return Err(tonic::Status::unavailable(format!("no address found for {}", names.join(", "))).into());
                }
            };
            backend.in_flight.fetch_add(1, Ordering::Relaxed);
            let mut channel = backend.channel.clone();
            let result = async {
                std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
                channel.call(request).await
            }
            .await;
            backend.in_flight.fetch_sub(1, Ordering::Relaxed);
            // A transport failure (refused, reset, closed, timed out) takes the address out of the rotation
            // until a probe reaches it; answers of the server itself, errors included, come as Ok. A call that
            // got no answer because its connection failed (refused, reset, or closed under it, which can also
            // end a call as "cancelled", one queued as the connection closed, or as an HTTP/2 error) is
            // UNAVAILABLE, which callers of idempotent calls send once more, to another replica. Only the call's
            // own deadline keeps its code: the replica may be slow rather than gone.
            result.map_err(|err| -> StdError {
                backend.down.store(true, Ordering::Relaxed);
                if timed_out(&err) {
                    err.into()
                } else {
                    tonic::Status::unavailable(format!("{} gave no answer: {err}", backend.addr)).into()
                }
            })
        })
    }
}

/// Whether a transport error is the call's own deadline running out (tonic's `TimeoutExpired`).
fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Runs an idempotent call and, when it failed as `UNAVAILABLE` (most often: its replica just went away and
/// has now left the rotation), runs it once more, which goes to another replica. Only for calls that are
/// safe to repeat: reads, and writes keyed by an id the server deduplicates on.
pub async fn once_more_if_unavailable<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    match call().await {
        Err(status) if status.code() == tonic::Code::Unavailable => call().await,
        other => other,
    }
}
