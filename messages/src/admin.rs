//! The operators' read-only view of orders, which the gateway's `/admin/…` API and its dashboard show:
//! asked of checkout-manager (which owns orders) as `admin.overview` and `admin.orders` queries.
//!
//! In camelCase, on the broker as over HTTP, like the rest of the gateway's API. Each field also reads its
//! former snake_case name, so a gateway and a checkout-manager of the releases on either side of the change
//! understand each other while a rolling upgrade replaces them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `admin.overview`: where orders stand now and over the last `window_minutes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OverviewRequest {
    /// How far back the recent figures look (1–60).
    #[serde(alias = "window_minutes")]
    pub window_minutes: u32,
    /// An unfinished order this much older than its creation is stuck.
    #[serde(alias = "stuck_after_seconds")]
    pub stuck_after_seconds: u32,
}

/// A count under a name (a status, a step).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Count {
    /// The status or step.
    pub key: String,
    /// How many.
    pub count: i64,
}

/// Orders created in one minute, by their status now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
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
#[serde(rename_all = "camelCase")]
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
    #[serde(alias = "p50_ms")]
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, milliseconds.
    #[serde(alias = "p99_ms")]
    pub p99_ms: Option<f64>,
}

/// One order as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrderSummary {
    /// The order.
    #[serde(rename = "orderID", alias = "order_id")]
    pub order_id: String,
    /// The buyer.
    #[serde(rename = "clientID", alias = "client_id")]
    pub client_id: String,
    /// Its status now.
    pub status: String,
    /// The step it waits on (`done` once final).
    pub step: String,
    /// What is charged, in cents.
    #[serde(alias = "total_cents")]
    pub total_cents: i64,
    /// When it was created.
    #[serde(alias = "created_at")]
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    #[serde(alias = "updated_at")]
    pub updated_at: DateTime<Utc>,
    /// Where it came from (`web`, `phone`, `sales-desk`, `direct`, ...).
    #[serde(default)]
    pub channel: String,
}

/// A timeline entry, as in `GET /orders/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
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
#[serde(rename_all = "camelCase")]
pub struct OrderDetail {
    /// The order.
    pub order: OrderSummary,
    /// From creation to final status, or to now for an unfinished order, in milliseconds.
    #[serde(alias = "took_ms")]
    pub took_ms: i64,
    /// Its saga steps, oldest first.
    pub timeline: Vec<Entry>,
}

/// Reply to `admin.overview`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    /// When the figures were read.
    #[serde(alias = "generated_at")]
    pub generated_at: DateTime<Utc>,
    /// The window of the recent figures, minutes.
    #[serde(alias = "window_minutes")]
    pub window_minutes: u32,
    /// Unfinished orders now, by status.
    #[serde(alias = "in_flight")]
    pub in_flight: Vec<Count>,
    /// Unfinished orders now, by the step they wait on.
    #[serde(alias = "waiting_on")]
    pub waiting_on: Vec<Count>,
    /// Orders created in the window, by status now.
    #[serde(alias = "recent_by_status")]
    pub recent_by_status: Vec<Count>,
    /// The same per minute.
    #[serde(alias = "per_minute")]
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
#[serde(rename_all = "camelCase")]
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
#[serde(rename_all = "camelCase")]
pub struct OrdersPage {
    /// Newest first.
    pub orders: Vec<OrderSummary>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> OrderSummary {
        OrderSummary {
            order_id: "o-1".into(),
            client_id: "alice".into(),
            status: "CONFIRMED".into(),
            step: "done".into(),
            total_cents: 1250,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            updated_at: DateTime::<Utc>::UNIX_EPOCH,
            channel: "web".into(),
        }
    }

    #[test]
    fn written_in_the_gateway_s_casing() {
        let json = serde_json::to_value(summary()).unwrap();
        let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["channel", "clientID", "createdAt", "orderID", "status", "step", "totalCents", "updatedAt"],
            "{json}"
        );
        let request = serde_json::to_value(OverviewRequest { window_minutes: 15, stuck_after_seconds: 60 }).unwrap();
        assert_eq!(request, serde_json::json!({"windowMinutes": 15, "stuckAfterSeconds": 60}));
    }

    #[test]
    fn the_former_snake_case_is_still_read() {
        let old = serde_json::json!({
            "order_id": "o-1", "client_id": "alice", "status": "CONFIRMED", "step": "done", "total_cents": 1250,
            "created_at": "1970-01-01T00:00:00Z", "updated_at": "1970-01-01T00:00:00Z", "channel": "web"
        });
        assert_eq!(serde_json::from_value::<OrderSummary>(old).unwrap(), summary());
        let request: OverviewRequest =
            serde_json::from_value(serde_json::json!({"window_minutes": 5, "stuck_after_seconds": 9})).unwrap();
        assert_eq!(request, OverviewRequest { window_minutes: 5, stuck_after_seconds: 9 });
    }
}
