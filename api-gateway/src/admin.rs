//! The operators' read-only JSON API under `/admin/…`, and the dashboard page that renders it.
//!
//! Order figures come from checkout-manager (which owns orders) over the same request/reply path as the
//! shop's reads; dead-letter queues and the services' readiness are read from RabbitMQ and inventory here.

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::header,
    response::{Html, IntoResponse},
};
use ordermesh_bus::{Topology, dead_letters};
use ordermesh_messages::{
    Channel,
    admin::{OrdersPage, OrdersRequest, Overview, OverviewRequest},
    kinds,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{error::ApiError, extract::RawQuery, routes::AppState};

/// Dead letters read per queue for the panel; the depth is always exact.
const PEEK: usize = 100;
/// Reasons shown per queue.
const LATEST: usize = 5;

fn number(query: &RawQuery, name: &str, default: u32, range: std::ops::RangeInclusive<u32>) -> Result<u32, ApiError> {
    match query.get(name) {
        None => Ok(default),
        Some(raw) => match raw.trim().parse::<u32>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!(
                "{name} must be a whole number from {} to {}",
                range.start(),
                range.end()
            ))),
        },
    }
}

/// Where orders stand: unfinished ones by status and by the step they wait on, the window's orders by
/// status (in total and per minute), saga step outcomes and latency, the slowest and the stuck orders.
#[utoipa::path(get, path = "/admin/overview", tag = "admin", params(
    ("windowMinutes" = Option<u32>, Query, minimum = 1, maximum = 60, description = "How far back the recent figures look (default 15)"),
    ("stuckAfterSeconds" = Option<u32>, Query, minimum = 1, maximum = 86400, description = "An unfinished order older than this is stuck (default 60)"),
), responses(
    (status = 200, description = "The overview", body = Overview),
    (status = 400, description = "A parameter out of range", body = crate::error::StatusBody),
    (status = 503, description = "checkout-manager is unreachable", body = crate::error::StatusBody),
    (status = 504, description = "No reply within the request deadline", body = crate::error::StatusBody),
))]
pub async fn overview(State(state): State<AppState>, query: RawQuery) -> Result<Json<Overview>, ApiError> {
    query.only(&["windowMinutes", "stuckAfterSeconds"])?;
    let request = OverviewRequest {
        window_minutes: number(&query, "windowMinutes", 15, 1..=60)?,
        stuck_after_seconds: number(&query, "stuckAfterSeconds", 60, 1..=86_400)?,
    };
    let overview =
        state.call("checkout-manager", state.topology.checkout_queries(), kinds::ADMIN_OVERVIEW, &request).await?;
    Ok(Json(overview))
}

/// The latest orders, newest first; `search` finds one order id or all orders of one client id.
#[utoipa::path(get, path = "/admin/orders", tag = "admin", params(
    ("search" = Option<String>, Query, max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$", description = "An order id or a client id, matched exactly (at most 100 characters, no control characters; surrounding spaces are ignored, and an empty search finds every order)"),
    ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "At most this many (default 50)"),
    ("channel" = Option<String>, Query, max_length = 32, pattern = "^([a-z0-9]([a-z0-9-]*[a-z0-9])?)?$", description = "Only orders from this channel (`web`, `phone`, `sales-desk`, `direct`, ...); empty: any"),
), responses(
    (status = 200, description = "Orders, newest first", body = OrdersPage),
    (status = 400, description = "A parameter out of range", body = crate::error::StatusBody),
    (status = 503, description = "checkout-manager is unreachable", body = crate::error::StatusBody),
    (status = 504, description = "No reply within the request deadline", body = crate::error::StatusBody),
))]
pub async fn orders(State(state): State<AppState>, query: RawQuery) -> Result<Json<OrdersPage>, ApiError> {
    query.only(&["search", "limit", "channel"])?;
    // The raw values are judged, exactly as the OpenAPI document states the rules; only then is a search
    // trimmed (a pasted id often carries a space), and an empty one or an empty channel means "any".
    let raw_search = query.get("search");
    if raw_search.is_some_and(|s| s.chars().count() > 100 || s.chars().any(char::is_control)) {
        return Err(ApiError::BadRequest(
            "search must be at most 100 characters, none of them control characters".into(),
        ));
    }
    let search = raw_search.map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let channel = match query.get("channel").filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(Channel::parse(raw).map_err(|e| ApiError::BadRequest(e.to_string()))?.to_string()),
    };
    let request = OrdersRequest { search, limit: number(&query, "limit", 50, 1..=200)?, channel };
    let page = state.call("checkout-manager", state.topology.checkout_queries(), kinds::ADMIN_ORDERS, &request).await?;
    Ok(Json(page))
}

/// One dead-letter queue.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterQueue {
    /// The work queue whose failures it holds.
    pub queue: String,
    /// The dead-letter queue.
    pub dead_letter_queue: String,
    /// Messages in it now.
    pub depth: u32,
    /// The reasons of the newest messages read (up to five, newest first; at most the 100 oldest are read).
    pub latest_reasons: Vec<String>,
}

/// `GET /admin/dead-letters` body.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLettersBody {
    /// One entry per work queue.
    pub queues: Vec<DeadLetterQueue>,
}

/// Each dead-letter queue's depth and its latest reasons. Messages are only looked at, never taken.
#[utoipa::path(get, path = "/admin/dead-letters", tag = "admin", responses(
    (status = 200, description = "Dead-letter queues", body = DeadLettersBody),
    (status = 503, description = "RabbitMQ is unreachable", body = crate::error::StatusBody),
))]
pub async fn dead_letters(State(state): State<AppState>) -> Result<Json<DeadLettersBody>, ApiError> {
    let unavailable = |_| ApiError::Unavailable("RabbitMQ cannot be reached right now; retry later".into());
    let mut queues = Vec::new();
    for queue in state.topology.work_queues() {
        let dlq = Topology::dead_letter_queue(&queue);
        let channel = state.bus.channel().await.map_err(unavailable)?;
        let peeked =
            tokio::time::timeout(Duration::from_secs(2), dead_letters::peek(channel, &dlq, PEEK, &state.topology))
                .await
                .map_err(|_| ApiError::Timeout("RabbitMQ"))?
                .map_err(|e| ApiError::Unavailable(format!("reading {dlq}: {e}")))?;
        let latest_reasons = peeked
            .reasons
            .into_iter()
            .rev()
            .take(LATEST)
            .map(|r| r.unwrap_or_else(|| "(no reason recorded)".into()))
            .collect();
        queues.push(DeadLetterQueue { queue, dead_letter_queue: dlq, depth: peeked.depth, latest_reasons });
    }
    Ok(Json(DeadLettersBody { queues }))
}

/// One part of the mesh and whether it can work now.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceState {
    /// The service.
    pub name: String,
    /// Whether it can do its work now.
    pub ready: bool,
    /// How that was found out.
    pub detail: String,
}

/// `GET /admin/services` body.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicesBody {
    /// The gateway, RabbitMQ, inventory and each worker.
    pub services: Vec<ServiceState>,
}

/// Each service's readiness: RabbitMQ connected, inventory answering, each worker consuming its queue.
#[utoipa::path(get, path = "/admin/services", tag = "admin", responses(
    (status = 200, description = "Readiness of each service", body = ServicesBody),
))]
pub async fn services(State(state): State<AppState>) -> Json<ServicesBody> {
    let mut services = vec![ServiceState { name: "api-gateway".into(), ready: true, detail: "answering".into() }];
    let rabbitmq = state.bus.is_connected();
    services.push(ServiceState {
        name: "rabbitmq".into(),
        ready: rabbitmq,
        detail: if rabbitmq { "connected" } else { "not connected" }.into(),
    });
    let inventory = state.inventory.probe().await;
    services.push(ServiceState {
        name: "inventory-manager".into(),
        ready: inventory.is_ok(),
        detail: inventory.map_or_else(|s| format!("{:?}: {}", s.code(), s.message()), |_| "answering gRPC".into()),
    });
    let t = &state.topology;
    for (name, queue) in [
        ("cart-manager", t.cart_jobs()),
        ("checkout-manager", t.checkout_jobs()),
        ("payment-gateway", t.payment_requests()),
        ("notifier", t.notifier_events()),
    ] {
        let consumers = consumers(&state, &queue).await;
        services.push(ServiceState {
            name: name.into(),
            ready: consumers.is_some_and(|n| n > 0),
            detail: match consumers {
                Some(n) => format!("{n} consumer(s) on {queue}"),
                None => format!("cannot look at {queue}"),
            },
        });
    }
    Json(ServicesBody { services })
}

async fn consumers(state: &AppState, queue: &str) -> Option<u32> {
    let channel = state.bus.channel().await.ok()?;
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    let declared =
        tokio::time::timeout(Duration::from_secs(1), channel.queue_declare(queue.into(), passive, Default::default()))
            .await;
    let _ = channel.close(200, "looked".into()).await;
    declared.ok()?.ok().map(|q| q.consumer_count())
}

/// The saga dashboard: one self-contained page (no external assets) that renders the `/admin/…` API and
/// refreshes itself every two seconds.
#[utoipa::path(get, path = "/dashboard", tag = "admin", responses(
    (status = 200, description = "The dashboard page", content_type = "text/html", body = String),
))]
pub async fn dashboard() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(include_str!("dashboard.html")))
}
