//! The OpenAPI document of the gateway, built from the handlers' own annotations, and the API-key scheme on it.

use super::*;

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
        shop::add_to_cart,
        shop::check_out_cart,
        shop::get_order,
        shop::get_cart,
        shop::remove_cart_item,
        shop::put_client,
        shop::get_client,
        shop::list_products,
        ops::healthz,
        ops::readyz,
        ops::metrics,
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
