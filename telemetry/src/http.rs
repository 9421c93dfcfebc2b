//! HTTP for metrics: the middleware that counts a router's requests, and the small server that serves
//! `/metrics` and `/healthz` for the services that have no HTTP port of their own.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Instant};

use anyhow::Context;
use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;

use tracing::Instrument;

use crate::{
    metrics::{CONTENT_TYPE, Metrics},
    trace,
};

/// Middleware (`axum::middleware::from_fn_with_state(metrics, track)`, added with `Router::layer`) counting
/// each answer by route template, so ids do not become series (unmatched paths count as `unmatched`), and
/// running the request in a span that starts its trace or continues the caller's `traceparent`. A handler
/// that learns the order's id records it on that span (`order_id`).
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let span = tracing::info_span!(
        "http",
        service = metrics.service(),
        %method,
        %route,
        trace_id = tracing::field::Empty,
        order_id = tracing::field::Empty,
    );
    let parent = request.headers().get(trace::TRACEPARENT).and_then(|v| v.to_str().ok());
    trace::continue_trace(&span, parent);
    let response = next.run(request).instrument(span).await;
    metrics.http(&method, &route, response.status().as_u16(), started.elapsed());
    response
}

/// `GET /metrics` for a router whose state is the service's [`Metrics`].
pub async fn scrape(State(metrics): State<Metrics>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render().await).into_response()
}

/// Whether the service can do its work now (connected to what it needs).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// The metrics endpoint of a worker: bound at build time (port 0 in tests), served until stopped.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    metrics: Metrics,
}

impl MetricsServer {
    /// Binds `addr`. When `addr` is only the default (`is_default`) and another process holds it (a second
    /// instance of the same service on this host), a free port on the same interface is taken instead, with a
    /// warning: a second worker must not fail to start over its metrics. An address set explicitly must bind.
    pub async fn bind(addr: SocketAddr, is_default: bool, metrics: Metrics) -> anyhow::Result<Self> {
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(e) if is_default && e.kind() == std::io::ErrorKind::AddrInUse => {
                let listener = TcpListener::bind(SocketAddr::new(addr.ip(), 0))
                    .await
                    .with_context(|| format!("binding the metrics listener on {}:0", addr.ip()))?;
                let taken = listener.local_addr()?;
                tracing::warn!(default = %addr, serving = %taken, service = metrics.service(), "the default metrics address is taken (another instance on this host?); serving metrics on a free port instead");
                listener
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("binding the metrics listener on {addr}"))),
        };
        Ok(Self { listener, metrics })
    }

    /// The usual setup of a service: a registry named for `service`, served at `addr`, which may fall back to
    /// a free port if it is `default` (a service with a database then watches its pool with
    /// `ordermesh_db::watch_pool`).
    pub async fn for_service(service: &'static str, addr: SocketAddr, default: SocketAddr) -> anyhow::Result<Self> {
        Self::bind(addr, addr == default, Metrics::new(service)).await
    }

    /// The metrics it serves, to record into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves `GET /metrics`, `GET /healthz` (readiness: 200 when `ready` says so, else 503) and `GET /livez`
    /// (liveness: 200 while the process serves at all, so an orchestrator restarts a hung process but not one
    /// that waits for its broker), until `stop` resolves.
    pub async fn serve(self, ready: Readiness, stop: impl Future<Output = ()> + Send + 'static) {
        let health = get(move || {
            let ready = ready.clone();
            async move { if ready() { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") } }
        });
        let app = Router::new()
            .route("/metrics", get(scrape))
            .with_state(self.metrics)
            .route("/healthz", health)
            .route("/livez", get(|| async { "alive" }));
        if let Err(e) = axum::serve(self.listener, app).with_graceful_shutdown(stop).await {
            tracing::warn!(error = %e, "the metrics server failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_default_address_falls_back_to_a_free_port_and_an_explicit_one_fails() {
        let first = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), true, Metrics::new("a")).await.unwrap();
        let taken = first.local_addr();
        let second = MetricsServer::bind(taken, true, Metrics::new("a")).await.expect("the default falls back");
        assert_ne!(second.local_addr().port(), taken.port());
        assert_eq!(second.local_addr().ip(), taken.ip());
        let err =
            MetricsServer::bind(taken, false, Metrics::new("a")).await.expect_err("an explicit address must bind");
        assert!(format!("{err:#}").contains(&taken.to_string()), "{err:#}");
    }
}
