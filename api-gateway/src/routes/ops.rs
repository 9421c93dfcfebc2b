//! Health, readiness and metrics: open to everyone, never refused for load.

use super::*;

/// Prometheus metrics of this gateway (OpenMetrics text): requests by route and status with latency,
/// messages by queue and type, gRPC calls to inventory. Never refused for load.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Metrics in the OpenMetrics text format", content_type = "application/openmetrics-text", body = String)
))]
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    ordermesh_telemetry::http::scrape(State(state.metrics)).await
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses(
    (status = 200, description = "Alive", body = StatusBody, example = json!({"status": "success", "error": ""}))
))]
pub(super) async fn healthz() -> Json<StatusBody> {
    Json(StatusBody::success())
}

/// Readiness: RabbitMQ is connected and inventory answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready", body = ReadyBody),
    (status = 503, description = "Not ready", body = ReadyBody),
))]
pub(super) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let rabbitmq = state.bus.is_connected();
    let inventory = state.inventory.probe().await.is_ok();
    let ready = rabbitmq && inventory;
    let body = ReadyBody { status: if ready { "ready" } else { "unavailable" }.into(), rabbitmq, inventory };
    (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}
