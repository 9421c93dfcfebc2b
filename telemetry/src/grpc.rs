//! A tower layer counting gRPC calls by method and status code, with their latency, and carrying the trace:
//! on a client, around its channel (it sends `traceparent`); on a server, around its routes (it continues it).
//!
//! tonic answers an error as a trailers-only response (the code in the headers) and a success with
//! `grpc-status: 0` in the trailers, so a unary call without the header in its headers succeeded.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use axum::http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::{
    metrics::{Metrics, grpc_code_name},
    trace,
};

/// Which end of the call is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// Counts every call of the service it wraps into `metrics`.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    metrics: Metrics,
    side: Side,
}

impl GrpcMetricsLayer {
    /// Around a server's routes: `grpc_server_*`.
    pub fn server(metrics: Metrics) -> Self {
        Self { metrics, side: Side::Server }
    }

    /// Around a client's channel: `grpc_client_*`.
    pub fn client(metrics: Metrics) -> Self {
        Self { metrics, side: Side::Client }
    }

    /// Wraps `inner` (as [`Layer::layer`], without importing tower).
    pub fn wrap<S>(&self, inner: S) -> GrpcMetrics<S> {
        self.layer(inner)
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner, metrics: self.metrics.clone(), side: self.side }
    }
}

/// The service [`GrpcMetricsLayer`] makes.
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Metrics,
    side: Side,
}

/// The method of a gRPC path `/package.Service/Method`, as `Service/Method`.
fn method_of(path: &str) -> String {
    let path = path.trim_start_matches('/');
    match path.split_once('/') {
        Some((service, method)) => format!("{}/{method}", service.rsplit('.').next().unwrap_or(service)),
        None => path.to_owned(),
    }
}

impl<S, B, RB> Service<Request<B>> for GrpcMetrics<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let method = method_of(request.uri().path());
        let (metrics, side) = (self.metrics.clone(), self.side);
        let started = Instant::now();
        // The trace goes along in the call's metadata; the server continues it.
        let span = match side {
            Side::Client => {
                if let Some(value) = trace::traceparent().and_then(|v| HeaderValue::from_str(&v).ok()) {
                    request.headers_mut().insert(trace::TRACEPARENT, value);
                }
                tracing::Span::none()
            }
            Side::Server => {
                let span = tracing::info_span!(
                    "grpc",
                    service = metrics.service(),
                    method = %method,
                    trace_id = tracing::field::Empty,
                );
                let parent = request.headers().get(trace::TRACEPARENT).and_then(|v| v.to_str().ok());
                trace::continue_trace(&span, parent);
                span
            }
        };
        let call = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let result = call.await;
                let code = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map_or("OK", grpc_code_name),
                    // The channel failed before any answer (connect refused, the client's own deadline).
                    Err(_) if side == Side::Client => "UNAVAILABLE",
                    Err(_) => "UNKNOWN",
                };
                // The health and reflection services answer probes; only the shop's own calls are counted.
                if !method.starts_with("Health/") && !method.starts_with("ServerReflection/") {
                    match side {
                        Side::Server => metrics.grpc_served(&method, code, started.elapsed()),
                        Side::Client => metrics.grpc_called(&method, code, started.elapsed()),
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_named_by_service_and_method() {
        assert_eq!(method_of("/inventory.v1.InventoryService/ReserveStock"), "InventoryService/ReserveStock");
        assert_eq!(method_of("/grpc.health.v1.Health/Check"), "Health/Check");
        assert_eq!(method_of("/odd"), "odd");
    }
}
