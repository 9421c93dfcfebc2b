//! The HTTP routes, each documented for OpenAPI from the code itself so the spec cannot drift.

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
use ordermesh_bus::{Bus, RpcClient, Topology};
use ordermesh_messages::{
    ClientId, Email, Envelope, IdempotencyKey, OrderId, ProductId, Quantity, ReplyError, kinds,
    payloads::{
        AddItem, CartView, Checkout, CheckoutAccepted, GetCart, GetOrder, GetProfile, ItemAdded, OrderLine, OrderView,
        PlaceOrder, Profile, PutProfile, RemoveItem,
    },
};
use ordermesh_proto::inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient};
use ordermesh_telemetry::{Metrics, grpc::GrpcMetrics};
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
    /// Request/reply over RabbitMQ.
    pub rpc: Arc<RpcClient>,
    /// The RabbitMQ connection (for readiness).
    pub bus: Bus,
    /// Queue names.
    pub topology: Topology,
    /// Catalogue reads.
    pub inventory: InventoryServiceClient<GrpcMetrics<ordermesh_proto::Balanced>>,
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

    fn grpc<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.request_timeout);
        request
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

/// The OpenAPI document, served at `/documentation/openapi.json`.
#[derive(Debug, OpenApi)]
#[openapi(
    modifiers(&ApiKeySecurity),
    tags(
        (name = "shop", description = "What a shop's clients call: carts, checkout, order status, profiles, the catalogue"),
        (name = "admin", description = "The operators' dashboard and its reads (operator keys only)"),
        (name = "operations", description = "Health, readiness and metrics, open to everyone")
    ),
    info(
        title = "ordermesh api-gateway",
        description = "Carts, checkout and order status of ordermesh. Every error is `{status: \"failure\", error}`."
    ),
    paths(
        add_to_cart,
        check_out_cart,
        get_order,
        get_cart,
        remove_cart_item,
        put_client,
        get_client,
        list_products,
        healthz,
        readyz,
        metrics,
        admin::overview,
        admin::orders,
        admin::dead_letters,
        admin::services,
        admin::dashboard
    ),
    components(schemas(
        AddToCartRequest,
        CheckOutCartRequest,
        StatusBody,
        CheckoutBody,
        OrderBody,
        OrderItem,
        TimelineItem,
        CartBody,
        CartLine,
        PutClientRequest,
        ClientBody,
        ProductsBody,
        ProductItem,
        ReadyBody,
        admin::DeadLettersBody,
        admin::DeadLetterQueue,
        admin::ServicesBody,
        admin::ServiceState,
        Count,
        Entry,
        MinuteCount,
        OrderDetail,
        OrderSummary,
        OrdersPage,
        Overview,
        StepStats
    ))
)]
pub struct ApiDoc;

/// Routes anyone may call, key or not.
const OPEN_ROUTES: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Declares the `X-API-Key` scheme (Swagger UI's Authorize button fills it in) and puts it, with its 401,
/// 403 and 429 answers, on every route but the open ones.
#[derive(Debug)]
struct ApiKeySecurity;

impl utoipa::Modify for ApiKeySecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{
            ContentBuilder, Ref, ResponseBuilder,
            security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme},
        };
        let scheme = ApiKeyValue::with_description(
            auth::API_KEY_HEADER_NAME,
            "An API key from `keys create`: a shopper key for the shop's routes, an operator key for everything. \
             Not needed when the gateway runs with GATEWAY_AUTH=off.",
        );
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(scheme)));
        let answer = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("StatusBody"))).build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if OPEN_ROUTES.contains(&path.as_str()) {
                continue;
            }
            let admin = path.starts_with("/admin") || path == "/dashboard";
            for operation in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete].into_iter().flatten() {
                operation.security = Some(vec![SecurityRequirement::new("api_key", Vec::<String>::new())]);
                let responses = &mut operation.responses.responses;
                responses.insert("401".into(), answer("No X-API-Key, or an unknown or revoked one").into());
                responses.insert(
                    "403".into(),
                    answer(if admin {
                        "The key is not an operator key"
                    } else {
                        "The key's role may not use this route"
                    })
                    .into(),
                );
                responses.insert("429".into(), answer("The key is over its request rate (with `Retry-After`)").into());
            }
        }
    }
}

/// `POST /addToCart` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddToCartRequest {
    /// The shopper, 1–100 characters.
    #[serde(rename = "clientID")]
    #[schema(value_type = String, min_length = 1, max_length = 100, example = "alice")]
    pub client_id: ClientId,
    /// The product, 1–100 characters.
    #[serde(rename = "productID")]
    #[schema(value_type = String, min_length = 1, max_length = 100, example = "mug")]
    pub product_id: ProductId,
    /// Units to add: an integer from 1 to 10000.
    #[schema(value_type = i64, minimum = 1, maximum = 10000, example = 2)]
    pub quantity: Quantity,
}

/// `POST /checkOutCart` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckOutCartRequest {
    /// The shopper, 1–100 characters.
    #[serde(rename = "clientID")]
    #[schema(value_type = String, min_length = 1, max_length = 100, example = "alice")]
    pub client_id: ClientId,
}

/// Answer to an accepted checkout.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutBody {
    /// `accepted`.
    #[schema(example = "accepted")]
    pub status: String,
    /// Empty.
    pub error: String,
    /// The new order; poll `GET /orders/{orderID}`.
    #[serde(rename = "orderID")]
    pub order_id: String,
}

/// One line of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItem {
    /// The product.
    #[serde(rename = "productID")]
    pub product_id: String,
    /// Units.
    pub quantity: i64,
    /// Unit price at checkout, in cents.
    #[serde(rename = "unitPriceCents")]
    pub unit_price_cents: i64,
}

impl From<OrderLine> for OrderItem {
    fn from(l: OrderLine) -> Self {
        Self { product_id: l.product_id.to_string(), quantity: l.quantity, unit_price_cents: l.unit_price_cents }
    }
}

/// One saga step.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineItem {
    /// `created`, `reserve`, `payment`, `commit`, `roll_back`, `refund`.
    pub step: String,
    /// `ok`, `rejected`, `declined`, `retry`, `failed`, `requested`.
    pub outcome: String,
    /// Why, for a person.
    pub detail: String,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// An order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderBody {
    /// The order.
    #[serde(rename = "orderID")]
    pub order_id: String,
    /// The buyer.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// `PENDING`, `RESERVED`, `PAYMENT_PENDING`, then final `CONFIRMED`, `REJECTED`, `PAYMENT_DECLINED` or `FAILED`.
    #[schema(example = "CONFIRMED")]
    pub status: String,
    /// What was ordered.
    pub items: Vec<OrderItem>,
    /// Amount charged, in cents.
    #[serde(rename = "totalCents")]
    pub total_cents: i64,
    /// When the order was created.
    #[serde(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    #[serde(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
    /// Every saga step, oldest first.
    pub timeline: Vec<TimelineItem>,
    /// Where the order came from: the channel of the API key that placed it (`web`, `phone`, `sales-desk`, ...),
    /// or `direct` when the gateway admits callers without keys.
    #[schema(example = "web")]
    pub channel: String,
}

impl From<OrderView> for OrderBody {
    fn from(o: OrderView) -> Self {
        Self {
            order_id: o.order_id.to_string(),
            client_id: o.client_id.to_string(),
            status: o.status,
            items: o.lines.into_iter().map(OrderItem::from).collect(),
            total_cents: o.total_cents,
            created_at: o.created_at,
            updated_at: o.updated_at,
            timeline: o
                .timeline
                .into_iter()
                .map(|t| TimelineItem { step: t.step, outcome: t.outcome, detail: t.detail, at: t.at })
                .collect(),
            channel: o.channel.to_string(),
        }
    }
}

impl OrderBody {
    /// An order checked out but not yet taken in by the saga.
    fn pending(o: PlaceOrder) -> Self {
        Self {
            order_id: o.order_id.to_string(),
            client_id: o.client_id.to_string(),
            status: "PENDING".into(),
            items: o.lines.into_iter().map(OrderItem::from).collect(),
            total_cents: o.total_cents,
            created_at: o.created_at,
            updated_at: o.created_at,
            timeline: Vec::new(),
            channel: o.channel.to_string(),
        }
    }
}

/// One product in a cart.
#[derive(Debug, Serialize, ToSchema)]
pub struct CartLine {
    /// The product.
    #[serde(rename = "productID")]
    pub product_id: String,
    /// Units in the cart.
    pub quantity: i64,
    /// Current unit price, in cents.
    #[serde(rename = "unitPriceCents")]
    pub unit_price_cents: i64,
}

/// A cart.
#[derive(Debug, Serialize, ToSchema)]
pub struct CartBody {
    /// The shopper.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// In product order.
    pub items: Vec<CartLine>,
    /// At current prices, in cents.
    #[serde(rename = "totalCents")]
    pub total_cents: i64,
}

impl From<CartView> for CartBody {
    fn from(c: CartView) -> Self {
        Self {
            client_id: c.client_id.to_string(),
            items: c
                .items
                .into_iter()
                .map(|i| CartLine {
                    product_id: i.product_id.to_string(),
                    quantity: i.quantity,
                    unit_price_cents: i.unit_price_cents,
                })
                .collect(),
            total_cents: c.total_cents,
        }
    }
}

/// A catalogue product.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductItem {
    /// The product.
    #[serde(rename = "productID")]
    pub product_id: String,
    /// Display name.
    pub name: String,
    /// Unit price, in cents.
    #[serde(rename = "priceCents")]
    pub price_cents: i64,
    /// Units that can be ordered now.
    pub available: i64,
}

/// The catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductsBody {
    /// In product id order.
    pub products: Vec<ProductItem>,
}

/// Readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyBody {
    /// `ready` or `unavailable`.
    pub status: String,
    /// Whether RabbitMQ is connected.
    pub rabbitmq: bool,
    /// Whether inventory answers.
    pub inventory: bool,
}

/// The client's `Idempotency-Key` header, validated (1–200 printable ASCII characters).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let text = value.to_str().map_err(|_| ApiError::BadRequest("Idempotency-Key must be printable ASCII".into()))?;
    IdempotencyKey::parse(text).map(Some).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn parse<T>(raw: String, parse: impl FnOnce(String) -> Result<T, ordermesh_messages::IdError>) -> Result<T, ApiError> {
    parse(raw).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Add units of a product to a client's cart.
#[utoipa::path(post, path = "/addToCart", tag = "shop", request_body = AddToCartRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1–200 printable characters, scoped per client: a retry with the same key and body gets the first answer and adds nothing again")),
    responses(
    (status = 200, description = "Added", body = StatusBody, example = json!({"status": "success", "error": ""})),
    (status = 400, description = "Invalid input: malformed JSON, not a JSON object, missing or unknown fields, a quantity that is not an integer from 1 to 10000, an id not 1–100 characters", body = StatusBody),
    (status = 404, description = "Unknown product", body = StatusBody),
    (status = 409, description = "The cart would hold more than is available", body = StatusBody),
    (status = 422, description = "The Idempotency-Key was already used for a different request", body = StatusBody),
    (status = 413, description = "Body over 64 KiB", body = StatusBody),
    (status = 415, description = "Not a JSON body", body = StatusBody),
    (status = 503, description = "A downstream service is unreachable, or the gateway is at its limit of requests in flight or of orders not yet final (with `Retry-After`)", body = StatusBody),
    (status = 504, description = "No reply within the request deadline", body = StatusBody),
))]
async fn add_to_cart(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<AddToCartRequest>,
) -> Result<Json<StatusBody>, ApiError> {
    let job = AddItem {
        client_id: body.client_id,
        product_id: body.product_id,
        quantity: body.quantity,
        idempotency_key: idempotency_key(&headers)?,
    };
    let _: ItemAdded = state.call("cart-manager", state.topology.cart_jobs(), kinds::CART_ADD_ITEM, &job).await?;
    Ok(Json(StatusBody::success()))
}

/// Turn the client's cart into an order; the saga then runs asynchronously.
#[utoipa::path(post, path = "/checkOutCart", tag = "shop", request_body = CheckOutCartRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1–200 printable characters; a retried checkout with the same key returns the same order")),
    responses(
    (status = 202, description = "Order created and handed to the saga", body = CheckoutBody),
    (status = 400, description = "Invalid input", body = StatusBody),
    (status = 404, description = "A product in the cart no longer exists", body = StatusBody),
    (status = 409, description = "The cart is empty, or kept changing under the checkout (adds racing it): nothing was checked out", body = StatusBody),
    (status = 413, description = "Body over 64 KiB", body = StatusBody),
    (status = 415, description = "Not a JSON body", body = StatusBody),
    (status = 503, description = "A downstream service is unreachable, or the gateway is at its limit of requests in flight (with `Retry-After`)", body = StatusBody),
    (status = 504, description = "No reply within the request deadline", body = StatusBody),
))]
async fn check_out_cart(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CheckOutCartRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let idempotency_key = match idempotency_key(&headers)? {
        Some(key) => format!("key:{}", key.as_str()),
        // Without a key, a redelivery of this one request still makes one order.
        None => format!("request:{}", uuid::Uuid::now_v7()),
    };
    let job = Checkout { client_id: body.client_id, idempotency_key, channel: caller.channel };
    let accepted: CheckoutAccepted =
        state.call("cart-manager", state.topology.cart_jobs(), kinds::CART_CHECKOUT, &job).await?;
    if accepted.created {
        state.waiters.accepted(accepted.order_id.as_str());
    }
    tracing::Span::current().record("order_id", accepted.order_id.as_str());
    let body =
        CheckoutBody { status: "accepted".into(), error: String::new(), order_id: accepted.order_id.to_string() };
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// An order with its status and saga timeline.
#[utoipa::path(get, path = "/orders/{orderID}", tag = "shop", params(
    ("orderID" = String, Path, description = "The order id from checkout"),
    ("waitSeconds" = Option<u64>, Query, minimum = 0, maximum = 30, description = "Answer as soon as the order is final, or after this many seconds (0–30)"),
), responses(
    (status = 200, description = "The order", body = OrderBody),
    (status = 400, description = "Invalid id or waitSeconds", body = StatusBody),
    (status = 404, description = "Unknown order", body = StatusBody),
    (status = 503, description = "A downstream service is unreachable, or the gateway is at its limit of requests in flight (with `Retry-After`)", body = StatusBody),
    (status = 504, description = "No reply within the request deadline", body = StatusBody),
))]
async fn get_order(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(order_id): ApiPath<String>,
    query: RawQuery,
) -> Result<Json<OrderBody>, ApiError> {
    let order_id = parse(order_id, OrderId::parse)?;
    let order = read_order(&state, order_id, query).await?;
    // A shopper key sees its own channel's orders only; another channel's order does not exist for it.
    if !caller.may_see(&order.channel) {
        return Err(ApiError::NotFound(format!("no order {}", order.order_id)));
    }
    Ok(Json(order))
}

/// An order, waiting up to `waitSeconds` for it to be final.
async fn read_order(state: &AppState, order_id: OrderId, query: RawQuery) -> Result<OrderBody, ApiError> {
    query.only(&["waitSeconds"])?;
    let max = state.max_wait.as_secs();
    let wait = match query.get("waitSeconds") {
        None => Duration::ZERO,
        Some(raw) => match raw.trim().parse::<u64>() {
            Ok(secs) if secs <= max => Duration::from_secs(secs),
            _ => return Err(ApiError::BadRequest(format!("waitSeconds must be a whole number from 0 to {max}"))),
        },
    };
    let until = tokio::time::Instant::now() + wait;
    let request = GetOrder { order_id };
    // An order this gateway accepted moments ago is known to exist and not yet final: the first read would
    // only say PENDING (or not found yet), so it waits for the final event first.
    let mut skip_first_read = !wait.is_zero();
    loop {
        // Registered before the read, so a final event landing between the read and the wait is not missed.
        let waiting = (!wait.is_zero()).then(|| state.waiters.wait_for(request.order_id.as_str()));
        let woken = waiting.as_ref().map(|w| w.notified());
        tokio::pin!(woken);
        if let Some(woken) = woken.as_mut().as_pin_mut() {
            woken.enable();
        }
        // The final event carries the whole final order: a read it woke answers with it, without asking again.
        let carried = || waiting.as_ref().and_then(|w| w.final_view());
        if let Some(order) = carried() {
            return Ok(order.into());
        }
        if std::mem::take(&mut skip_first_read)
            && state.waiters.known_pending(request.order_id.as_str())
            && let Some(woken) = woken.as_mut().as_pin_mut()
        {
            let now = tokio::time::Instant::now();
            let _ = tokio::time::timeout_at((now + state.wait_poll).min(until), woken).await;
            if let Some(order) = carried() {
                return Ok(order.into());
            }
            continue;
        }
        let order = state
            .call::<OrderView>("checkout-manager", state.topology.checkout_queries(), kinds::ORDER_GET, &request)
            .await;
        let body = match order {
            Ok(order) if order.is_final => return Ok(order.into()),
            Ok(order) => order.into(),
            // Accepted by cart-manager but not yet taken in by checkout-manager: it exists, and is PENDING.
            Err(ApiError::NotFound(_)) => {
                let placed: PlaceOrder =
                    state.call("cart-manager", state.topology.cart_jobs(), kinds::CART_GET_CHECKOUT, &request).await?;
                OrderBody::pending(placed)
            }
            Err(e) => return Err(e),
        };
        let now = tokio::time::Instant::now();
        let Some(woken) = woken.as_mut().as_pin_mut().filter(|_| now < until) else { return Ok(body) };
        // Woken by the event (then read once more, even at the deadline), or asks again after the fallback
        // poll, or answers with what it has at the deadline.
        let timed_out = tokio::time::timeout_at((now + state.wait_poll).min(until), woken).await.is_err();
        if let Some(order) = carried() {
            return Ok(order.into());
        }
        if timed_out && tokio::time::Instant::now() >= until {
            return Ok(body);
        }
    }
}

/// `PUT /clients/{clientID}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutClientRequest {
    /// Where order emails go (a plain `name@example.com`, at most 254 characters); `null` stops them.
    #[serde(deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = true, max_length = 254, example = "ada@example.com")]
    pub email: Option<Email>,
}

/// A required field whose value may be `null` (serde would otherwise take a missing one as `null`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Email>, D::Error> {
    Option::<Email>::deserialize(d)
}

/// A shopper's contact details.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientBody {
    /// The shopper.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Where order emails go; `null`: no emails.
    pub email: Option<String>,
    /// When it was last set; `null` if never.
    #[serde(rename = "updatedAt")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<Profile> for ClientBody {
    fn from(p: Profile) -> Self {
        Self { client_id: p.client_id.to_string(), email: p.email.map(String::from), updated_at: p.updated_at }
    }
}

/// Set where a shopper's order emails go (confirmed, payment declined, failed), or stop them with `null`.
#[utoipa::path(put, path = "/clients/{clientID}", tag = "shop", request_body = PutClientRequest, params(("clientID" = String, Path)), responses(
    (status = 200, description = "Stored", body = ClientBody),
    (status = 400, description = "Invalid id, malformed JSON, a missing or unknown field, or not a plain email address", body = StatusBody),
    (status = 413, description = "Body over 64 KiB", body = StatusBody),
    (status = 415, description = "Not a JSON body", body = StatusBody),
    (status = 503, description = "The notifier is unreachable, or the gateway is at its limit of requests in flight (with `Retry-After`)", body = StatusBody),
    (status = 504, description = "No reply within the request deadline", body = StatusBody),
))]
async fn put_client(
    State(state): State<AppState>,
    ApiPath(client_id): ApiPath<String>,
    ApiJson(body): ApiJson<PutClientRequest>,
) -> Result<Json<ClientBody>, ApiError> {
    let job = PutProfile { client_id: parse(client_id, ClientId::parse)?, email: body.email };
    let profile: Profile =
        state.call("notifier", state.topology.notifier_jobs(), kinds::CLIENT_PUT_PROFILE, &job).await?;
    Ok(Json(profile.into()))
}

/// A shopper's contact details (`email: null` if none were set).
#[utoipa::path(get, path = "/clients/{clientID}", tag = "shop", params(("clientID" = String, Path)), responses(
    (status = 200, description = "The profile", body = ClientBody),
    (status = 400, description = "Invalid id", body = StatusBody),
    (status = 503, description = "The notifier is unreachable, or the gateway is at its limit of requests in flight (with `Retry-After`)", body = StatusBody),
    (status = 504, description = "No reply within the request deadline", body = StatusBody),
))]
async fn get_client(
    State(state): State<AppState>,
    ApiPath(client_id): ApiPath<String>,
) -> Result<Json<ClientBody>, ApiError> {
    let job = GetProfile { client_id: parse(client_id, ClientId::parse)? };
    let profile: Profile =
        state.call("notifier", state.topology.notifier_jobs(), kinds::CLIENT_GET_PROFILE, &job).await?;
    Ok(Json(profile.into()))
}

/// A client's cart at current prices.
#[utoipa::path(get, path = "/cart/{clientID}", tag = "shop", params(("clientID" = String, Path)), responses(
    (status = 200, description = "The cart (empty if the client has none)", body = CartBody),
    (status = 400, description = "Invalid id", body = StatusBody),
    (status = 503, description = "A downstream service is unreachable, or the gateway is at its limit of requests in flight (with `Retry-After`)", body = StatusBody),
    (status = 504, description = "No reply within the request deadline", body = StatusBody),
))]
async fn get_cart(
    State(state): State<AppState>,
    ApiPath(client_id): ApiPath<String>,
) -> Result<Json<CartBody>, ApiError> {
    let job = GetCart { client_id: parse(client_id, ClientId::parse)? };
    let cart: CartView = state.call("cart-manager", state.topology.cart_jobs(), kinds::CART_GET, &job).await?;
    Ok(Json(cart.into()))
}

/// Take a product out of a client's cart.
#[utoipa::path(delete, path = "/cart/{clientID}/items/{productID}", tag = "shop", params(
    ("clientID" = String, Path), ("productID" = String, Path),
    ("Idempotency-Key" = Option<String>, Header, description = "As for addToCart: a retry with the same key answers 200 again instead of 404"),
), responses(
    (status = 200, description = "Removed", body = StatusBody, example = json!({"status": "success", "error": ""})),
    (status = 400, description = "Invalid id", body = StatusBody),
    (status = 404, description = "The product is not in the cart", body = StatusBody),
    (status = 422, description = "The Idempotency-Key was already used for a different request", body = StatusBody),
    (status = 503, description = "A downstream service is unreachable, or the gateway is at its limit of requests in flight (with `Retry-After`)", body = StatusBody),
    (status = 504, description = "No reply within the request deadline", body = StatusBody),
))]
async fn remove_cart_item(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((client_id, product_id)): ApiPath<(String, String)>,
) -> Result<Json<StatusBody>, ApiError> {
    let job = RemoveItem {
        client_id: parse(client_id, ClientId::parse)?,
        product_id: parse(product_id, ProductId::parse)?,
        idempotency_key: idempotency_key(&headers)?,
    };
    let _: serde_json::Value =
        state.call("cart-manager", state.topology.cart_jobs(), kinds::CART_REMOVE_ITEM, &job).await?;
    Ok(Json(StatusBody::success()))
}

/// The catalogue with prices and available quantities.
#[utoipa::path(get, path = "/products", tag = "shop", responses(
    (status = 200, description = "Every product", body = ProductsBody),
    (status = 503, description = "Inventory is unreachable, or the gateway is at its limit of requests in flight (with `Retry-After`)", body = StatusBody),
    (status = 504, description = "Inventory did not answer in time", body = StatusBody),
))]
async fn list_products(State(state): State<AppState>) -> Result<Json<ProductsBody>, ApiError> {
    let mut products = Vec::new();
    let mut page_token = String::new();
    // Bounded: at most 20 pages of 500.
    for _ in 0..20 {
        let page = state
            .inventory
            .clone()
            .list_products(state.grpc(pb::ListProductsRequest { page_size: 500, page_token }))
            .await
            .map_err(|s| match s.code() {
                tonic::Code::DeadlineExceeded => ApiError::Timeout("inventory-manager"),
                _ => {
                    tracing::warn!(code = ?s.code(), detail = %s.message(), "inventory ListProducts failed");
                    ApiError::Unavailable("inventory-manager cannot be reached right now; retry later".into())
                }
            })?
            .into_inner();
        products.extend(page.products.into_iter().map(|p| ProductItem {
            product_id: p.product_id,
            name: p.name,
            price_cents: p.price_cents,
            available: p.available,
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(Json(ProductsBody { products }))
}

/// Prometheus metrics of this gateway (OpenMetrics text): requests by route and status with latency,
/// messages by queue and type, gRPC calls to inventory. Never refused for load.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Metrics in the OpenMetrics text format", content_type = "application/openmetrics-text", body = String)
))]
async fn metrics(State(state): State<AppState>) -> Response {
    ordermesh_telemetry::http::scrape(State(state.metrics)).await
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses(
    (status = 200, description = "Alive", body = StatusBody, example = json!({"status": "success", "error": ""}))
))]
async fn healthz() -> Json<StatusBody> {
    Json(StatusBody::success())
}

/// Readiness: RabbitMQ is connected and inventory answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready", body = ReadyBody),
    (status = 503, description = "Not ready", body = ReadyBody),
))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let rabbitmq = state.bus.is_connected();
    let mut request = tonic::Request::new(pb::ListProductsRequest { page_size: 1, page_token: String::new() });
    request.set_timeout(Duration::from_secs(1));
    let inventory = state.inventory.clone().list_products(request).await.is_ok();
    let ready = rabbitmq && inventory;
    let body = ReadyBody { status: if ready { "ready" } else { "unavailable" }.into(), rabbitmq, inventory };
    (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}
