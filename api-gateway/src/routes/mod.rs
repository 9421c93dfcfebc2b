//! The HTTP surface: the shared state, the router and its middleware. The handlers are in `shop` and `ops`,
//! their bodies in `bodies`, and the OpenAPI document, generated from the handlers so it cannot drift, in
//! `openapi`.

mod bodies;
mod openapi;
mod ops;
mod shop;

pub use bodies::*;
pub use openapi::ApiDoc;
use ops::{healthz, metrics, readyz};
use shop::{add_to_cart, check_out_cart, get_cart, get_client, get_order, list_products, put_client, remove_cart_item};

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    error_handling::HandleErrorLayer,
    extract::{DefaultBodyLimit, Extension, Request, State},
    http::{HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use chrono::{DateTime, Utc};
use ordermesh_bus::{Bus, Requests, Topology};
use ordermesh_messages::{
    ClientId, Email, Envelope, IdempotencyKey, OrderId, ProductId, Quantity, ReplyError, kinds,
    payloads::{
        AddItem, CartView, Checkout, CheckoutAccepted, GetCart, GetOrder, GetProfile, ItemAdded, OrderLine, OrderView,
        PlaceOrder, Profile, PutProfile, RemoveItem,
    },
};
use ordermesh_telemetry::Metrics;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tower::limit::GlobalConcurrencyLimitLayer;
use utoipa::{OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

use ordermesh_messages::admin::{
    Count, Entry, MinuteCount, OrderDetail, OrderSummary, OrdersPage, Overview, StepStats,
};

use crate::{
    admin,
    auth::{self, Auth, Caller, Gate},
    error::{ApiError, StatusBody},
    extract::{ApiJson, ApiPath, RawQuery},
    keys::Role,
};

/// Admin API requests served at once.
const ADMIN_MAX_IN_FLIGHT: usize = 16;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Request/reply over RabbitMQ (`RpcClient`; scripted replies in the router's tests).
    pub rpc: Arc<dyn Requests>,
    /// The RabbitMQ connection (for readiness).
    pub bus: Bus,
    /// Queue names.
    pub topology: Topology,
    /// Catalogue reads.
    pub inventory: ordermesh_proto::InventoryClient,
    /// Deadline for each downstream request.
    pub request_timeout: Duration,
    /// Bound of `waitSeconds`.
    pub max_wait: Duration,
    /// A waiting read's fallback poll (it is woken by the order's final event).
    pub wait_poll: Duration,
    /// Reads waiting for an order to be final.
    pub waiters: Arc<crate::waiters::Waiters>,
    /// Admission limit of cart, checkout and catalogue requests.
    pub max_in_flight: usize,
    /// Admission limit of order reads.
    pub max_waiting: usize,
    /// Orders accepted here and not yet seen final beyond which adds are refused.
    pub max_open_orders: usize,
    /// This gateway's metrics, served at `/metrics`.
    pub metrics: Metrics,
    /// Who may call (API keys, roles, rates).
    pub auth: Arc<Auth>,
}

impl AppState {
    /// Sends a job to `queue` and decodes its reply as `T`.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        service: &'static str,
        queue: String,
        kind: &str,
        payload: &impl Serialize,
    ) -> Result<T, ApiError> {
        let reply = self
            .rpc
            .call(&queue, Envelope::new(kind, payload), self.request_timeout)
            .await
            .map_err(|e| ApiError::from_rpc(e, service))?;
        let result: Result<T, ReplyError> =
            reply.payload().map_err(|e| ApiError::Internal(format!("undecodable reply from {service}: {e}")))?;
        Ok(result?)
    }
}

/// The whole HTTP surface, without a socket: tests can call `app(state).oneshot(request)`.
pub fn app(state: AppState) -> Router {
    // Work beyond what the mesh can serve is refused at once (503, Retry-After) instead of queueing until
    // its deadline: a client told "busy" retries; one left waiting holds a slot the next client needed.
    // One semaphore is shared by all the routes a layer wraps.
    let shed_beyond = |limit: usize| {
        tower::ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async { ApiError::Overloaded }))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::new(limit))
    };
    // The key gate runs inside the shed limit: a flood of made-up keys is refused like any overload,
    // never turned into unbounded key lookups.
    let gate = |needs: Role| middleware::from_fn_with_state(Gate { auth: state.auth.clone(), needs }, auth::gate);
    let work = Router::new()
        .route("/addToCart", post(add_to_cart))
        .route_layer(middleware::from_fn_with_state(state.clone(), saga_backlog))
        .route("/checkOutCart", post(check_out_cart))
        .route("/cart/{clientID}", get(get_cart))
        .route("/cart/{clientID}/items/{productID}", delete(remove_cart_item))
        .route("/clients/{clientID}", get(get_client).put(put_client))
        .route("/products", get(list_products))
        .route_layer(gate(Role::Shopper))
        .route_layer(shed_beyond(state.max_in_flight));
    // The operators' view has a small limit of its own: a dashboard left open everywhere cannot crowd out shoppers.
    let admin = Router::new()
        .route("/admin/overview", get(admin::overview))
        .route("/admin/orders", get(admin::orders))
        .route("/admin/dead-letters", get(admin::dead_letters))
        .route("/admin/services", get(admin::services))
        .route("/dashboard", get(admin::dashboard))
        .route_layer(gate(Role::Operator))
        .route_layer(shed_beyond(ADMIN_MAX_IN_FLIGHT));
    let sign_in = Router::new()
        .route("/dashboard/session", post(auth::sign_in))
        .route("/dashboard/session/end", post(auth::sign_out))
        .route_layer(shed_beyond(ADMIN_MAX_IN_FLIGHT))
        .with_state(state.auth.clone());
    // Waiting reads cost little while they wait, so they have a limit of their own and do not crowd out work.
    let reads = Router::new()
        .route("/orders/{orderID}", get(get_order))
        .route_layer(gate(Role::Shopper))
        .route_layer(shed_beyond(state.max_waiting));
    Router::new()
        .merge(work)
        .merge(reads)
        .merge(admin)
        .merge(sign_in)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(SwaggerUi::new("/documentation").url("/documentation/openapi.json", ApiDoc::openapi()))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        // Outermost, so refusals, timeouts and unknown routes are counted too.
        .layer(middleware::from_fn_with_state(state.metrics.clone(), ordermesh_telemetry::http::track))
        .with_state(state)
}

/// New shopping waits while the saga is behind. The in-flight limit bounds requests, but an accepted
/// checkout's saga runs after its 202: left alone, adds and checkouts admitted faster than orders finish
/// pile up inside the saga and every order's time to final grows. So while the orders this gateway let in
/// and has not seen finish reach `max_open_orders`, an add is refused at once (503, `Retry-After`). A
/// checkout is not: its cart is filled, it is the work closest to done, and it is one request.
async fn saga_backlog(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.waiters.open_orders() >= state.max_open_orders {
        return ApiError::Overloaded.into_response();
    }
    next.run(request).await
}

/// The outer bound of every request, whatever its handler awaits: the longest legitimate one (an order
/// read waiting `max_wait`, then two downstream calls) plus a second. Handlers have tighter deadlines
/// of their own; this one is the guarantee that no request hangs.
async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.max_wait + state.request_timeout * 2 + Duration::from_secs(1);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(?limit, "a request outlived the gateway's outer deadline");
            ApiError::Timeout("the gateway").into_response()
        }
    }
}
