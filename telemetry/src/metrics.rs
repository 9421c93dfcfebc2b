//! One Prometheus registry per service instance (tests run several services in one process, so nothing here is
//! global), the plumbing's metric families (HTTP, gRPC, AMQP, outbox, database pool), gauges sampled only when
//! scraped, and [`Metrics::register`] for the families each service declares for its own domain.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Metric, Registry},
};

/// `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// HTTP requests by route template (`/orders/{orderID}`, not the id), method and status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

/// A route and method, for latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

/// A gRPC method and its status code's name (`OK`, `NOT_FOUND`, …).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub method: String,
    pub code: &'static str,
}

/// A gRPC method, for latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

/// What happened to messages: per queue (or exchange, for publishes), message type and event.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    pub queue: String,
    pub kind: String,
}

/// One label naming a state or event.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// A database pool and the state of its connections.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
    pub state: &'static str,
}

/// A value owned by one service (outbox backlog, reservations held), labelled with it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: &'static str,
}

/// Latency buckets from 0.5 ms to 16 s, doubling.
#[derive(Debug, Clone, Copy)]
pub struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.0005, 2.0, 16))
    }
}

type Seconds = Family<RouteLabels, Histogram, Buckets>;
type FloatGauge = Gauge<f64, AtomicU64>;
type Sampler = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The families; a family appears in the output once something records into it, so each service shows
/// only what it does.
#[derive(Debug)]
pub struct Families {
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_seconds: Seconds,
    pub grpc_server: Family<GrpcLabels, Counter>,
    pub grpc_server_seconds: Family<MethodLabels, Histogram, Buckets>,
    pub grpc_client: Family<GrpcLabels, Counter>,
    pub grpc_client_seconds: Family<MethodLabels, Histogram, Buckets>,
    pub published: Family<MessageLabels, Counter>,
    pub consumed: Family<MessageLabels, Counter>,
    pub redelivered: Family<MessageLabels, Counter>,
    pub retried: Family<MessageLabels, Counter>,
    pub dead_lettered: Family<MessageLabels, Counter>,
    pub expired: Family<MessageLabels, Counter>,
    pub outbox_backlog: Family<ServiceLabels, Gauge>,
    pub outbox_oldest_seconds: Family<ServiceLabels, FloatGauge>,
    pub db_pool: Family<PoolLabels, Gauge>,
}

impl Default for Families {
    fn default() -> Self {
        Self {
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(Buckets),
            grpc_server: Family::default(),
            grpc_server_seconds: Family::new_with_constructor(Buckets),
            grpc_client: Family::default(),
            grpc_client_seconds: Family::new_with_constructor(Buckets),
            published: Family::default(),
            consumed: Family::default(),
            redelivered: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            expired: Family::default(),
            outbox_backlog: Family::default(),
            outbox_oldest_seconds: Family::default(),
            db_pool: Family::default(),
        }
    }
}

struct Inner {
    service: &'static str,
    registry: Mutex<Registry>,
    families: Families,
    samplers: Mutex<Vec<Sampler>>,
}

/// A service instance's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").field("service", &self.0.service).finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh registry for `service` with every family registered.
    pub fn new(service: &'static str) -> Self {
        let f = Families::default();
        let mut r = Registry::default();
        r.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            f.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency, by route template and method",
            f.http_seconds.clone(),
        );
        r.register("grpc_server_handled", "gRPC calls served, by method and status code", f.grpc_server.clone());
        r.register(
            "grpc_server_handling_seconds",
            "gRPC call latency on the server, by method",
            f.grpc_server_seconds.clone(),
        );
        r.register("grpc_client_handled", "gRPC calls made, by method and status code", f.grpc_client.clone());
        r.register(
            "grpc_client_handling_seconds",
            "gRPC call latency seen by the caller, by method",
            f.grpc_client_seconds.clone(),
        );
        r.register(
            "amqp_messages_published",
            "Messages published and confirmed, by exchange or queue and type",
            f.published.clone(),
        );
        r.register("amqp_messages_consumed", "Messages delivered to a handler, by queue and type", f.consumed.clone());
        r.register(
            "amqp_messages_redelivered",
            "Deliveries the broker marked redelivered, by queue and type",
            f.redelivered.clone(),
        );
        r.register(
            "amqp_messages_retried",
            "Messages handed back for a retry after a passing failure, by queue and type",
            f.retried.clone(),
        );
        r.register(
            "amqp_messages_dead_lettered",
            "Messages moved to a dead-letter queue, by queue and type",
            f.dead_lettered.clone(),
        );
        r.register(
            "amqp_requests_expired",
            "Requests dropped because their sender's deadline had passed",
            f.expired.clone(),
        );
        r.register(
            "outbox_backlog",
            "Outbox messages not yet published (sampled when scraped)",
            f.outbox_backlog.clone(),
        );
        r.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox message (sampled when scraped)",
            f.outbox_oldest_seconds.clone(),
        );
        r.register(
            "db_pool_connections",
            "Database pool connections by state: in_use, idle, max (sampled when scraped)",
            f.db_pool.clone(),
        );
        Self(Arc::new(Inner { service, registry: Mutex::new(r), families: f, samplers: Mutex::new(Vec::new()) }))
    }

    /// The service these metrics belong to.
    pub fn service(&self) -> &'static str {
        self.0.service
    }

    /// The plumbing's families, to record into.
    pub fn families(&self) -> &Families {
        &self.0.families
    }

    /// Registers a family a service declares for its own domain (saga steps, reservations, emails), to be
    /// rendered with the plumbing's. Record into the value kept, not into this registry.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.0.registry.lock().unwrap_or_else(|p| p.into_inner()).register(name, help, metric);
    }

    /// Runs `sample` before every scrape (bounded by a second), so a gauge that needs a query costs nothing
    /// when nobody looks.
    pub fn add_sampler<F, Fut>(&self, sample: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let sampler: Sampler = Arc::new(move || Box::pin(sample()));
        self.0.samplers.lock().unwrap_or_else(|p| p.into_inner()).push(sampler);
    }

    /// Sets the connection gauges of the database pool `name`: connections in use, idle, and the pool's
    /// maximum (`ordermesh_db::watch_pool` samples a pool into it at each scrape).
    pub fn record_pool(&self, name: &str, in_use: i64, idle: i64, max: i64) {
        let set = |state, v| self.families().db_pool.get_or_create(&PoolLabels { pool: name.to_owned(), state }).set(v);
        set("in_use", in_use);
        set("idle", idle);
        set("max", max);
    }

    /// Samples, then renders everything in the OpenMetrics text format.
    pub async fn render(&self) -> String {
        let samplers = self.0.samplers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for sample in samplers {
            if tokio::time::timeout(Duration::from_secs(1), sample()).await.is_err() {
                tracing::warn!("a metrics sampler took over a second; its gauges keep their last value");
            }
        }
        let mut out = String::new();
        let registry = self.0.registry.lock().unwrap_or_else(|p| p.into_inner());
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }

    /// Counts an HTTP answer and its latency.
    pub fn http(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let f = self.families();
        f.http_requests.get_or_create(&HttpLabels { method: method.to_owned(), route: route.to_owned(), status }).inc();
        f.http_seconds
            .get_or_create(&RouteLabels { method: method.to_owned(), route: route.to_owned() })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a gRPC call served.
    pub fn grpc_served(&self, method: &str, code: &'static str, elapsed: Duration) {
        let f = self.families();
        f.grpc_server.get_or_create(&GrpcLabels { method: method.to_owned(), code }).inc();
        f.grpc_server_seconds.get_or_create(&MethodLabels { method: method.to_owned() }).observe(elapsed.as_secs_f64());
    }

    /// Counts a gRPC call made.
    pub fn grpc_called(&self, method: &str, code: &'static str, elapsed: Duration) {
        let f = self.families();
        f.grpc_client.get_or_create(&GrpcLabels { method: method.to_owned(), code }).inc();
        f.grpc_client_seconds.get_or_create(&MethodLabels { method: method.to_owned() }).observe(elapsed.as_secs_f64());
    }

    /// Counts a message event into `family` (one of the `amqp_*` families).
    pub fn message(family: &Family<MessageLabels, Counter>, queue: &str, kind: &str) {
        family.get_or_create(&MessageLabels { queue: queue.to_owned(), kind: kind.to_owned() }).inc();
    }

    /// Counts into a family labelled by one state (a service's orders by final status, reservation events).
    pub fn count(family: &Family<StateLabels, Counter>, state: &str, by: u64) {
        family.get_or_create(&StateLabels { state: state.to_owned() }).inc_by(by);
    }

    /// Sets a gauge owned by this service (labelled with its name).
    pub fn set(&self, family: &Family<ServiceLabels, Gauge>, value: i64) {
        family.get_or_create(&ServiceLabels { service: self.0.service }).set(value);
    }

    /// Sets a float gauge owned by this service.
    pub fn set_f64(&self, family: &Family<ServiceLabels, FloatGauge>, value: f64) {
        family.get_or_create(&ServiceLabels { service: self.0.service }).set(value);
    }
}

/// The canonical name of a gRPC status code number (`0` → `OK`), as Prometheus users expect to filter on.
pub fn grpc_code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code).ok().and_then(|i| NAMES.get(i)).copied().unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn series_appear_once_recorded_and_samplers_run_at_each_scrape() {
        let metrics = Metrics::new("test-service");
        let before = metrics.render().await;
        assert_eq!(before, "# EOF\n", "a family shows only once something is recorded into it");

        metrics.http("POST", "/addToCart", 200, Duration::from_millis(3));
        metrics.http("POST", "/addToCart", 200, Duration::from_millis(5));
        // A service's own family, registered beside the plumbing's.
        let orders_final = Family::<StateLabels, Counter>::default();
        metrics.register("orders_final", "Orders by final status", orders_final.clone());
        Metrics::count(&orders_final, "CONFIRMED", 1);
        let scrapes = Arc::new(AtomicU64::new(0));
        {
            let (m, scrapes) = (metrics.clone(), scrapes.clone());
            metrics.add_sampler(move || {
                let n = scrapes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let m = m.clone();
                async move { m.set(&m.families().outbox_backlog, i64::try_from(n).unwrap()) }
            });
        }
        metrics.render().await;
        let text = metrics.render().await;
        assert!(text.contains(r#"http_requests_total{method="POST",route="/addToCart",status="200"} 2"#), "{text}");
        assert!(text.contains(r#"http_request_duration_seconds_count{method="POST",route="/addToCart"} 2"#), "{text}");
        assert!(text.contains(r#"orders_final_total{state="CONFIRMED"} 1"#), "{text}");
        assert!(text.contains(r#"outbox_backlog{service="test-service"} 2"#), "sampled at each scrape: {text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn grpc_codes_have_their_canonical_names() {
        assert_eq!(grpc_code_name(0), "OK");
        assert_eq!(grpc_code_name(8), "RESOURCE_EXHAUSTED");
        assert_eq!(grpc_code_name(16), "UNAUTHENTICATED");
        assert_eq!(grpc_code_name(99), "UNKNOWN");
    }
}
