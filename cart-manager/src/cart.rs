//! Cart operations on cart-manager's database. Each write is one transaction; checkout hands the
//! order to checkout-manager through the outbox in the same transaction that empties the cart.

use chrono::{DateTime, Utc};
use ordermesh_bus::{Topology, outbox};
use ordermesh_messages::{
    ClientId, Envelope, IdempotencyKey, OrderId, ProductId, Quantity, kinds,
    money::Money,
    payloads::{self, CartItem, CartView, ItemAdded, OrderLine, PlaceOrder},
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    error::CartError,
    inventory::Catalogue,
    requests::{Refusal, answer, before_deadline, refuse, remember, replay, stored_refusal, vanished},
};

type Result<T> = std::result::Result<T, CartError>;

/// The most units of one product a cart may hold (inventory's per-line bound).
pub const MAX_UNITS_PER_PRODUCT: i64 = 1_000_000;

/// Who asked, and how to recognise the same request again.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The job's message id: a redelivery of the very same job carries it again.
    pub message_id: Uuid,
    /// The client's `Idempotency-Key`, which also covers the client's own retries (new jobs).
    pub idempotency_key: Option<&'a IdempotencyKey>,
    /// After this the caller no longer waits: nothing may be committed (checked inside the transaction).
    pub deadline: Option<DateTime<Utc>>,
}

impl Request<'_> {
    fn key(&self) -> String {
        match self.idempotency_key {
            Some(key) => format!("key:{}", key.as_str()),
            None => format!("message:{}", self.message_id),
        }
    }
}

/// Adds `quantity` units, keeping the cart's total for the product within what inventory has available.
///
/// Idempotent on the request's key: a repeat with the same body gets the first answer (a refusal included) and
/// adds nothing.
/// After the product read (outside any transaction: no lock across a network call) it is one statement: the
/// replay lookup, the deadline check, the conditional add and the record of the answer commit together or not
/// at all. A racing copy of the same request fails on the record's key and answers from the first.
pub async fn add_item(
    pool: &PgPool,
    inventory: &impl Catalogue,
    request: &Request<'_>,
    client: &ClientId,
    product: &ProductId,
    quantity: Quantity,
) -> Result<ItemAdded> {
    let key = request.key();
    let fingerprint = serde_json::json!({"op": "add_item", "productID": product, "quantity": quantity}).to_string();
    let info = match inventory.product(product).await {
        Ok(info) => info,
        Err(CartError::UnknownProduct(product_id)) => {
            return refuse(pool, client, &key, &fingerprint, Refusal::UnknownProduct { product_id }).await;
        }
        // A replay answers as the first time did, even if inventory is down now.
        Err(e) => return replay(&mut *pool.acquire().await?, client, &key, &fingerprint).await?.ok_or(e),
    };
    let limit = info.available.min(MAX_UNITS_PER_PRODUCT);
    let applied = sqlx::query_as!(
        AddOutcome,
        r#"WITH prior AS (
           SELECT fingerprint, response, refusal FROM cart_requests WHERE client_id = $1::text AND request_key = $5::text
         ), in_time AS (
           SELECT $7::timestamptz IS NULL OR clock_timestamp() < $7 AS ok
         ), added AS (
           INSERT INTO cart_items AS c (client_id, product_id, quantity)
           SELECT $1, $2::text, $3::bigint
           WHERE $3 <= $4::bigint AND NOT EXISTS (SELECT 1 FROM prior) AND (SELECT ok FROM in_time)
           ON CONFLICT (client_id, product_id) DO UPDATE
             SET quantity = c.quantity + EXCLUDED.quantity, updated_at = now()
             WHERE c.quantity + EXCLUDED.quantity <= $4
           RETURNING quantity
         ), recorded AS (
           INSERT INTO cart_requests (client_id, request_key, fingerprint, response)
           SELECT $1, $5, $6::text, jsonb_build_object('quantity_in_cart', quantity) FROM added
         )
         SELECT (SELECT fingerprint FROM prior) AS "prior_fingerprint?",
                (SELECT response FROM prior) AS "prior_response?",
                (SELECT refusal FROM prior) AS "prior_refusal?",
                (SELECT ok FROM in_time) AS "in_time!",
                (SELECT quantity FROM added) AS "total?",
                (SELECT quantity FROM cart_items WHERE client_id = $1 AND product_id = $2) AS "in_cart?""#,
        client.as_str(),
        product.as_str(),
        quantity.get(),
        limit,
        key,
        fingerprint,
        request.deadline,
    )
    .fetch_one(pool)
    .await;
    let outcome = match applied {
        Ok(outcome) => outcome,
        // A copy of this request recorded first; its answer is the answer, and this add never happened.
        Err(e) if ordermesh_db::violates(&e, &["cart_requests_pkey"]) => {
            return replay(&mut *pool.acquire().await?, client, &key, &fingerprint)
                .await?
                .ok_or_else(|| vanished(&key));
        }
        Err(e) => return Err(e.into()),
    };
    match outcome {
        // An earlier copy's record: its answer, judged as a replay judges it.
        AddOutcome { prior_fingerprint: Some(stored), prior_response, prior_refusal, .. } => {
            answer(&stored, prior_response.unwrap_or_default(), prior_refusal, &fingerprint)
        }
        AddOutcome { in_time: false, .. } => Err(CartError::Expired),
        AddOutcome { total: Some(total), .. } => Ok(ItemAdded { quantity_in_cart: total }),
        // Nothing was added: the stock would be exceeded. Or a copy of this request (the client's retry under the
        // same key, or its first copy) added and is committing still, its record invisible to the lookup above:
        // recording the refusal waits for it, and then answers as it did.
        AddOutcome { in_cart, .. } => {
            let refusal = Refusal::NotEnoughStock {
                product_id: product.clone(),
                // The snapshot the statement read: what the cart held before this add.
                in_cart: in_cart.unwrap_or_default(),
                adding: quantity.get(),
                available: info.available,
            };
            refuse(pool, client, &key, &fingerprint, refusal).await
        }
    }
}

/// What the one-statement add found and did.
#[derive(sqlx::FromRow)]
struct AddOutcome {
    prior_fingerprint: Option<String>,
    prior_response: Option<serde_json::Value>,
    prior_refusal: Option<serde_json::Value>,
    in_time: bool,
    total: Option<i64>,
    in_cart: Option<i64>,
}

/// Takes a product out of the cart entirely; idempotent on the request's key like [`add_item`].
pub async fn remove_item(pool: &PgPool, request: &Request<'_>, client: &ClientId, product: &ProductId) -> Result<()> {
    let key = request.key();
    let fingerprint = serde_json::json!({"op": "remove_item", "productID": product}).to_string();
    let mut tx = pool.begin().await?;
    if replay::<()>(&mut tx, client, &key, &fingerprint).await?.is_some() {
        return Ok(());
    }
    let removed = sqlx::query!(
        "DELETE FROM cart_items WHERE client_id = $1 AND product_id = $2",
        client.as_str(),
        product.as_str()
    )
    .execute(&mut *tx)
    .await?;
    if removed.rows_affected() == 0 {
        // Not in the cart, or a copy of this request took the line out and is committing still (its row lock is
        // what this statement waited for): recording the refusal waits for its record, and answers as it did.
        tx.rollback().await?;
        return refuse(pool, client, &key, &fingerprint, Refusal::NotInCart { product_id: product.clone() }).await;
    }
    if !remember(&mut tx, client, &key, &fingerprint, &()).await? {
        // A copy of this request recorded first, applied or refused: its answer is this one's, and this removal
        // never happened.
        tx.rollback().await?;
        return replay(&mut *pool.acquire().await?, client, &key, &fingerprint).await?.ok_or_else(|| vanished(&key));
    }
    before_deadline(&mut tx, request.deadline).await?;
    tx.commit().await?;
    Ok(())
}

/// A cart's lines in byte order of product id, the order `checkout` compares them in.
async fn items(pool: &PgPool, client: &ClientId) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query!(
        r#"SELECT product_id, quantity FROM cart_items WHERE client_id = $1 ORDER BY product_id COLLATE "C""#,
        client.as_str()
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.product_id, r.quantity))
    .collect())
}

/// The total of priced lines, refused when it does not fit in a payment's amount (checked, as checkout-manager
/// checks it: never wrapped).
fn total(lines: impl IntoIterator<Item = (i64, i64)>) -> Result<i64> {
    let lines = lines.into_iter().map(|(quantity, unit_cents)| (quantity, Money::cents(unit_cents)));
    Money::total(lines).map(Money::as_cents).ok_or(CartError::TotalTooLarge)
}

/// The cart with current prices from inventory (a product gone from the catalogue shows at 0).
pub async fn view(pool: &PgPool, inventory: &impl Catalogue, client: &ClientId) -> Result<CartView> {
    let rows = stored_lines(items(pool, client).await?)?;
    // One read for the whole cart; a product gone from the catalogue shows at 0.
    let prices = if rows.is_empty() { Default::default() } else { inventory.products(&product_ids(&rows)).await? };
    let items: Vec<CartItem> = rows
        .into_iter()
        .map(|(product_id, quantity)| {
            let unit_price_cents = prices.get(&product_id).map_or(0, |p| p.price_cents);
            CartItem { product_id, quantity, unit_price_cents }
        })
        .collect();
    let total_cents = total(items.iter().map(|i| (i.quantity, i.unit_price_cents)))?;
    Ok(CartView { client_id: client.clone(), items, total_cents })
}

/// Stored cart lines with their product ids parsed.
fn stored_lines(rows: Vec<(String, i64)>) -> Result<Vec<(ProductId, i64)>> {
    rows.into_iter()
        .map(|(product_id, quantity)| {
            let id = ProductId::parse(product_id).map_err(|e| anyhow::anyhow!("stored product id: {e}"))?;
            Ok((id, quantity))
        })
        .collect()
}

fn product_ids(lines: &[(ProductId, i64)]) -> Vec<ProductId> {
    lines.iter().map(|(id, _)| id.clone()).collect()
}

/// What a checkout did.
#[derive(Debug)]
pub struct Checkout {
    /// The order the cart became.
    pub order_id: OrderId,
    /// Whether this call created it (false: an earlier request with the same key did).
    pub created: bool,
    /// The `order.place` row it queued, claimed for this instance's relay ([`outbox::Handoff`]).
    pub outbox: Vec<outbox::Row>,
}

/// How often checkout re-reads a cart that changed while it was being priced.
const CHECKOUT_ATTEMPTS: usize = 5;
/// A checkout's refusal is kept in `cart_requests` (its orders are in `checkouts`) under this fingerprint, and
/// under its key with this prefix: checkouts and adds keep their keys apart, as they always have.
const CHECKOUT_FINGERPRINT: &str = r#"{"op":"checkout"}"#;
const CHECKOUT_REFUSAL_PREFIX: &str = "checkout:";

/// Turns the cart into an order: snapshot with current prices, empty the cart, record the checkout
/// under its idempotency key and queue `order.place` in the outbox, all in one transaction. Returns the
/// order, whether this call created it, and the outbox row it wrote for the relay.
pub async fn checkout(
    pool: &PgPool,
    inventory: &impl Catalogue,
    topology: &Topology,
    job: &payloads::Checkout,
    deadline: Option<DateTime<Utc>>,
) -> Result<Checkout> {
    let payloads::Checkout { client_id: client, idempotency_key, channel } = job;
    let refusal_key = format!("{CHECKOUT_REFUSAL_PREFIX}{idempotency_key}");
    // Prices read by an earlier attempt of this checkout are kept: a cart that changed only in quantities
    // (an add racing the checkout) is priced again without asking inventory again.
    let mut prices = std::collections::HashMap::new();
    for _ in 0..CHECKOUT_ATTEMPTS {
        let (existing, cart) = checkout_state(pool, client, idempotency_key, &refusal_key).await?;
        if let Some(order_id) = existing {
            return Ok(Checkout { order_id, created: false, outbox: Vec::new() });
        }
        if cart.is_empty() {
            // The key's answer for good, as an add's refusal is ([`refuse`]): a copy of this checkout that comes
            // later (its first copy, delayed past its client's patience) finds it and orders nothing, whatever
            // the cart holds by then.
            refuse::<()>(pool, client, &refusal_key, CHECKOUT_FINGERPRINT, Refusal::EmptyCart).await?;
            return Err(CartError::Internal(anyhow::anyhow!(
                "checkout {idempotency_key}: a stored answer, not a refusal"
            )));
        }
        // Prices are read before the statement, in one call for the whole cart: no row lock is held across
        // a network call.
        let priced = stored_lines(cart.clone())?;
        let unpriced: Vec<ProductId> =
            priced.iter().filter(|(id, _)| !prices.contains_key(id)).map(|(id, _)| id.clone()).collect();
        if !unpriced.is_empty() {
            prices.extend(inventory.products(&unpriced).await?);
        }
        let lines = priced
            .into_iter()
            .map(|(product_id, quantity)| match prices.get(&product_id) {
                Some(info) => Ok(OrderLine { product_id, quantity, unit_price_cents: info.price_cents }),
                None => Err(CartError::UnknownProduct(product_id)),
            })
            .collect::<Result<Vec<_>>>();
        let lines = lines?;
        let total_cents = total(lines.iter().map(|l| (l.quantity, l.unit_price_cents)))?;

        let order_id = OrderId::generate();
        let order = PlaceOrder {
            order_id: order_id.clone(),
            client_id: client.clone(),
            lines,
            total_cents,
            created_at: Utc::now(),
            channel: channel.clone(),
        };
        let snapshot = serde_json::to_value(&order).map_err(anyhow::Error::from)?;
        let envelope = Envelope::new(kinds::ORDER_PLACE, &order).correlated(order_id.as_str());
        let (products, quantities): (Vec<&str>, Vec<i64>) = cart.iter().map(|(p, q)| (p.as_str(), *q)).unzip();
        // One statement (one round trip, atomic as a transaction): the cart's rows are locked and must still
        // be what was priced; only then, and only before the caller's deadline, is the cart emptied, the
        // checkout recorded under its key and `order.place` queued. The cart is emptied only if the record
        // went in, so a racing checkout under the same key that recorded first leaves this cart alone.
        let body = envelope.to_vec_traced(ordermesh_telemetry::trace::traceparent());
        let written = sqlx::query!(
            r#"WITH c AS (
               SELECT product_id, quantity FROM cart_items WHERE client_id = $1 FOR UPDATE
             ), same AS (
               SELECT coalesce(array_agg(product_id ORDER BY product_id COLLATE "C"), '{}') = $6::text[]
                      AND coalesce(array_agg(quantity ORDER BY product_id COLLATE "C"), '{}') = $7::bigint[] AS ok
               FROM c
             ), go AS (
               SELECT ok, $8::timestamptz IS NULL OR clock_timestamp() < $8 AS in_time FROM same
             ), k AS (
               INSERT INTO checkouts (client_id, idempotency_key, order_id, total_cents, order_snapshot)
               SELECT $1::text, $2::text, $3::text, $4::bigint, $5::jsonb FROM go
               WHERE ok AND in_time AND NOT EXISTS (
                 SELECT 1 FROM cart_requests WHERE client_id = $1 AND request_key = $13::text)
               ON CONFLICT (client_id, idempotency_key) DO NOTHING
               RETURNING order_id
             ), d AS (
               DELETE FROM cart_items WHERE client_id = $1 AND EXISTS (SELECT 1 FROM k)
             ), box AS (
               INSERT INTO outbox (exchange, routing_key, message_id, body, claimed_until)
               SELECT '', $9::text, $10::uuid, $11::bytea, now() + make_interval(secs => $12) FROM k
               RETURNING id
             )
             SELECT go.ok AS "unchanged!", go.in_time AS "in_time!", EXISTS (SELECT 1 FROM k) AS "recorded!",
                    (SELECT id FROM box) AS "outbox_id?"
             FROM go"#,
            client.as_str(),
            idempotency_key,
            order_id.as_str(),
            total_cents,
            snapshot,
            &products as &[&str],
            &quantities,
            deadline,
            topology.checkout_jobs(),
            envelope.message_id,
            body,
            outbox::HANDED_CLAIM_SECS,
            refusal_key,
        )
        .fetch_one(pool)
        .await?;
        let (unchanged, in_time, recorded, outbox_id) =
            (written.unchanged, written.in_time, written.recorded, written.outbox_id);
        if !in_time {
            return Err(CartError::Expired);
        }
        if !unchanged || !recorded {
            // The cart changed (or another checkout took it) since it was priced, or a racing retry with the
            // same key recorded first, or a copy of this checkout was refused: start over (the next read finds
            // that order or that refusal).
            continue;
        }
        tracing::info!(%client, %order_id, total_cents, "cart checked out");
        let handed = outbox_id.map(|id| (id, String::new(), topology.checkout_jobs(), body)).into_iter().collect();
        return Ok(Checkout { order_id, created: true, outbox: handed });
    }
    Err(CartError::CartChanging)
}

/// The order an earlier checkout under `key` made, if any, and the cart as it is (product order): one
/// statement, so a checkout reads in one round trip what it needs before pricing. A checkout under `key`
/// that was refused is that refusal, as the error.
async fn checkout_state(
    pool: &PgPool,
    client: &ClientId,
    key: &str,
    refusal_key: &str,
) -> Result<(Option<OrderId>, Vec<(String, i64)>)> {
    let state = sqlx::query!(
        r#"SELECT (SELECT order_id FROM checkouts WHERE client_id = $1 AND idempotency_key = $2) AS "existing?",
                (SELECT refusal FROM cart_requests WHERE client_id = $1 AND request_key = $3) AS "refused?",
                ARRAY(SELECT product_id FROM cart_items WHERE client_id = $1 ORDER BY product_id COLLATE "C") AS "products!",
                ARRAY(SELECT quantity FROM cart_items WHERE client_id = $1 ORDER BY product_id COLLATE "C") AS "quantities!""#,
        client.as_str(),
        key,
        refusal_key,
    )
    .fetch_one(pool)
    .await?;
    if let Some(refusal) = state.refused {
        return Err(stored_refusal(refusal));
    }
    let (existing, products, quantities) = (state.existing, state.products, state.quantities);
    let existing = existing
        .map(|id| OrderId::parse(id).map_err(|e| CartError::Internal(anyhow::anyhow!("stored order id: {e}"))))
        .transpose()?;
    Ok((existing, products.into_iter().zip(quantities).collect()))
}

/// The order as it was checked out (what checkout-manager was handed), if this cart-manager made it.
pub async fn checkout_snapshot(pool: &PgPool, order_id: &OrderId) -> Result<Option<PlaceOrder>> {
    let snapshot = sqlx::query_scalar!("SELECT order_snapshot FROM checkouts WHERE order_id = $1", order_id.as_str())
        .fetch_optional(pool)
        .await?;
    snapshot
        .map(|s| {
            serde_json::from_value(s).map_err(|e| CartError::Internal(anyhow::anyhow!("stored order snapshot: {e}")))
        })
        .transpose()
}

/// Forgets applied requests older than a day: redeliveries and client retries come within minutes, not days.
pub async fn prune_processed(pool: &PgPool) -> Result<u64> {
    Ok(sqlx::query!("DELETE FROM cart_requests WHERE created_at < now() - interval '1 day'")
        .execute(pool)
        .await?
        .rows_affected())
}
