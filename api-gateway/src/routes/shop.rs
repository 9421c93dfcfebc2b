//! The shop's handlers: carts, checkout, orders, client profiles and the catalogue. Each decodes, asks the
//! worker that owns the data (or inventory) within the request's deadline, and maps the answer.

use super::*;

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
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[\\u0021-\\u007E]([\\u0020-\\u007E]{0,198}[\\u0021-\\u007E])?$", description = "1–200 printable characters, scoped per client: a retry with the same key and body gets the first answer and adds nothing again")),
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
pub(super) async fn add_to_cart(
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
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[\\u0021-\\u007E]([\\u0020-\\u007E]{0,198}[\\u0021-\\u007E])?$", description = "1–200 printable characters; a retried checkout with the same key returns the same order")),
    responses(
    (status = 202, description = "Order created and handed to the saga", body = CheckoutBody),
    (status = 400, description = "Invalid input", body = StatusBody),
    (status = 404, description = "A product in the cart no longer exists", body = StatusBody),
    (status = 409, description = "The cart is empty, kept changing under the checkout (adds racing it), or its total is beyond any amount: nothing was checked out", body = StatusBody),
    (status = 413, description = "Body over 64 KiB", body = StatusBody),
    (status = 415, description = "Not a JSON body", body = StatusBody),
    (status = 503, description = "A downstream service is unreachable, or the gateway is at its limit of requests in flight (with `Retry-After`)", body = StatusBody),
    (status = 504, description = "No reply within the request deadline", body = StatusBody),
))]
pub(super) async fn check_out_cart(
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
    ("orderID" = String, Path, min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$", description = "The order id from checkout"),
    ("waitSeconds" = Option<u64>, Query, minimum = 0, maximum = 30, description = "Answer as soon as the order is final, or after this many seconds (0–30)"),
), responses(
    (status = 200, description = "The order", body = OrderBody),
    (status = 400, description = "Invalid id or waitSeconds", body = StatusBody),
    (status = 404, description = "Unknown order", body = StatusBody),
    (status = 503, description = "A downstream service is unreachable, or the gateway is at its limit of requests in flight (with `Retry-After`)", body = StatusBody),
    (status = 504, description = "No reply within the request deadline", body = StatusBody),
))]
pub(super) async fn get_order(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(order_id): ApiPath<String>,
    query: RawQuery,
) -> Result<Json<OrderBody>, ApiError> {
    let order_id = parse(order_id, OrderId::parse)?;
    let order = read_order(&state, order_id, query).await?;
    // A shopper key sees its own channel's orders only; another channel's order does not exist for it, in the
    // same words as an id that was never used, so the answer does not tell which ids exist elsewhere.
    if !caller.may_see(&order.channel) {
        return Err(ApiError::NotFound(format!("unknown order {}", order.order_id)));
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
/// Set where a shopper's order emails go (confirmed, payment declined, failed), or stop them with `null`.
#[utoipa::path(put, path = "/clients/{clientID}", tag = "shop", request_body = PutClientRequest, params(("clientID" = String, Path, min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$")), responses(
    (status = 200, description = "Stored", body = ClientBody),
    (status = 400, description = "Invalid id, malformed JSON, a missing or unknown field, or not a plain email address", body = StatusBody),
    (status = 413, description = "Body over 64 KiB", body = StatusBody),
    (status = 415, description = "Not a JSON body", body = StatusBody),
    (status = 503, description = "The notifier is unreachable, or the gateway is at its limit of requests in flight (with `Retry-After`)", body = StatusBody),
    (status = 504, description = "No reply within the request deadline", body = StatusBody),
))]
pub(super) async fn put_client(
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
#[utoipa::path(get, path = "/clients/{clientID}", tag = "shop", params(("clientID" = String, Path, min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$")), responses(
    (status = 200, description = "The profile", body = ClientBody),
    (status = 400, description = "Invalid id", body = StatusBody),
    (status = 503, description = "The notifier is unreachable, or the gateway is at its limit of requests in flight (with `Retry-After`)", body = StatusBody),
    (status = 504, description = "No reply within the request deadline", body = StatusBody),
))]
pub(super) async fn get_client(
    State(state): State<AppState>,
    ApiPath(client_id): ApiPath<String>,
) -> Result<Json<ClientBody>, ApiError> {
    let job = GetProfile { client_id: parse(client_id, ClientId::parse)? };
    let profile: Profile =
        state.call("notifier", state.topology.notifier_jobs(), kinds::CLIENT_GET_PROFILE, &job).await?;
    Ok(Json(profile.into()))
}

/// A client's cart at current prices.
#[utoipa::path(get, path = "/cart/{clientID}", tag = "shop", params(("clientID" = String, Path, min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$")), responses(
    (status = 200, description = "The cart (empty if the client has none)", body = CartBody),
    (status = 400, description = "Invalid id", body = StatusBody),
    (status = 409, description = "The cart's total at current prices is beyond any amount (totals are checked, never wrapped)", body = StatusBody),
    (status = 503, description = "A downstream service is unreachable, or the gateway is at its limit of requests in flight (with `Retry-After`)", body = StatusBody),
    (status = 504, description = "No reply within the request deadline", body = StatusBody),
))]
pub(super) async fn get_cart(
    State(state): State<AppState>,
    ApiPath(client_id): ApiPath<String>,
) -> Result<Json<CartBody>, ApiError> {
    let job = GetCart { client_id: parse(client_id, ClientId::parse)? };
    let cart: CartView = state.call("cart-manager", state.topology.cart_jobs(), kinds::CART_GET, &job).await?;
    Ok(Json(cart.into()))
}

/// Take a product out of a client's cart.
#[utoipa::path(delete, path = "/cart/{clientID}/items/{productID}", tag = "shop", params(
    ("clientID" = String, Path, min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("productID" = String, Path, min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"),
    ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[\\u0021-\\u007E]([\\u0020-\\u007E]{0,198}[\\u0021-\\u007E])?$", description = "As for addToCart: a retry with the same key answers 200 again instead of 404"),
), responses(
    (status = 200, description = "Removed", body = StatusBody, example = json!({"status": "success", "error": ""})),
    (status = 400, description = "Invalid id", body = StatusBody),
    (status = 404, description = "The product is not in the cart", body = StatusBody),
    (status = 422, description = "The Idempotency-Key was already used for a different request", body = StatusBody),
    (status = 503, description = "A downstream service is unreachable, or the gateway is at its limit of requests in flight (with `Retry-After`)", body = StatusBody),
    (status = 504, description = "No reply within the request deadline", body = StatusBody),
))]
pub(super) async fn remove_cart_item(
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
pub(super) async fn list_products(State(state): State<AppState>) -> Result<Json<ProductsBody>, ApiError> {
    let mut products = Vec::new();
    let mut page_token = String::new();
    // Bounded: at most 20 pages of 500.
    for _ in 0..20 {
        let page = state.inventory.list_products(500, page_token).await.map_err(|s| match s.code() {
            tonic::Code::DeadlineExceeded => ApiError::Timeout("inventory-manager"),
            _ => {
                tracing::warn!(code = ?s.code(), detail = %s.message(), "inventory ListProducts failed");
                ApiError::Unavailable("inventory-manager cannot be reached right now; retry later".into())
            }
        })?;
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
