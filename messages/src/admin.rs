//! The operators' read-only view of orders, which the gateway's `/admin/…` API and its dashboard show:
//! asked of checkout-manager (which owns orders) as `admin.overview` and `admin.orders` queries.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `admin.overview`: where orders stand now and over the last `window_minutes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OverviewRequest {
    /// How far back the recent figures look (1–60).
    pub window_minutes: u32,
    /// An unfinished order this much older than its creation is stuck.
    pub stuck_after_seconds: u32,
}

/// A count under a name (a status, a step).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Count {
    /// The status or step.
    pub key: String,
    /// How many.
    pub count: i64,
}

/// Orders created in one minute, by their status now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MinuteCount {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    /// The orders' status now.
    pub status: String,
    /// How many.
    pub count: i64,
}

/// How one saga step went over the window: outcomes and latency (from the entry before it in the
/// order's timeline: the reservation from the order's creation, payment from its request, commit from
/// the payment).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepStats {
    /// `reserve`, `payment`, `commit` or `roll_back`.
    pub step: String,
    /// Succeeded.
    pub ok: i64,
    /// Failed for a passing reason and scheduled again.
    pub retry: i64,
    /// Given up.
    pub failed: i64,
    /// Refused for a business reason: out of stock (`rejected`), payment `declined`.
    pub refused: i64,
    /// Median latency, milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: Option<f64>,
}

/// One order as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderSummary {
    /// The order.
    pub order_id: String,
    /// The buyer.
    pub client_id: String,
    /// Its status now.
    pub status: String,
    /// The step it waits on (`done` once final).
    pub step: String,
    /// What is charged, in cents.
    pub total_cents: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Where it came from (`web`, `phone`, `sales-desk`, `direct`, ...).
    #[serde(default)]
    pub channel: String,
}

/// A timeline entry, as in `GET /orders/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Entry {
    /// The step.
    pub step: String,
    /// Its outcome.
    pub outcome: String,
    /// Why, for a person.
    pub detail: String,
    /// When it was stored.
    pub at: DateTime<Utc>,
}

/// A slow or stuck order with its timeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderDetail {
    /// The order.
    pub order: OrderSummary,
    /// From creation to final status, or to now for an unfinished order, in milliseconds.
    pub took_ms: i64,
    /// Its saga steps, oldest first.
    pub timeline: Vec<Entry>,
}

/// Reply to `admin.overview`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Overview {
    /// When the figures were read.
    pub generated_at: DateTime<Utc>,
    /// The window of the recent figures, minutes.
    pub window_minutes: u32,
    /// Unfinished orders now, by status.
    pub in_flight: Vec<Count>,
    /// Unfinished orders now, by the step they wait on.
    pub waiting_on: Vec<Count>,
    /// Orders created in the window, by status now.
    pub recent_by_status: Vec<Count>,
    /// The same per minute.
    pub per_minute: Vec<MinuteCount>,
    /// Saga steps in the window.
    pub steps: Vec<StepStats>,
    /// The slowest orders that ended in the window, slowest first.
    pub slowest: Vec<OrderDetail>,
    /// Unfinished orders older than the threshold, oldest first.
    pub stuck: Vec<OrderDetail>,
}

/// `admin.orders`: the latest orders, newest first; `search` is an exact order id or client id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OrdersRequest {
    /// An order id or a client id, matched exactly; none lists all.
    pub search: Option<String>,
    /// At most this many (1–200).
    pub limit: u32,
    /// Only orders from this channel; none lists every channel.
    #[serde(default)]
    pub channel: Option<String>,
}

/// Reply to `admin.orders`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrdersPage {
    /// Newest first.
    pub orders: Vec<OrderSummary>,
}
