//! The record of cart requests by key (`cart_requests`): each applied request's answer, or its refusal, so that
//! a copy of the request (a redelivery, the client's retry, a first copy that arrives late) answers as the first
//! did and changes nothing; and the deadline check a write makes before it commits.

use chrono::{DateTime, Utc};
use ordermesh_messages::{ClientId, ProductId};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sqlx::{PgConnection, PgPool};

use crate::error::CartError;

type Result<T> = std::result::Result<T, CartError>;

/// The last statement before a commit: refuses to commit for a caller that has stopped waiting.
/// The caller's own deadline is later than this one by a margin (see `bus::rpc::worker_deadline`), so
/// what commits here is answered before the caller gives up, unless the reply itself is lost.
pub(crate) async fn before_deadline(conn: &mut PgConnection, deadline: Option<DateTime<Utc>>) -> Result<()> {
    let Some(deadline) = deadline else { return Ok(()) };
    let in_time =
        sqlx::query_scalar!(r#"SELECT clock_timestamp() < $1 AS "in_time!""#, deadline).fetch_one(conn).await?;
    if in_time { Ok(()) } else { Err(CartError::Expired) }
}

/// The stored answer of a request with this key, if any: what it returned when applied, or its refusal (as the
/// error); a different body under the same key is refused.
pub(crate) async fn replay<T: DeserializeOwned>(
    conn: &mut PgConnection,
    client: &ClientId,
    key: &str,
    fingerprint: &str,
) -> Result<Option<T>> {
    let row = sqlx::query!(
        "SELECT fingerprint, response, refusal FROM cart_requests WHERE client_id = $1 AND request_key = $2",
        client.as_str(),
        key,
    )
    .fetch_optional(conn)
    .await?;
    row.map(|r| answer(&r.fingerprint, r.response, r.refusal, fingerprint)).transpose()
}

/// A stored record of a key judged for a request with `fingerprint`: a different body under the same key is
/// refused, a stored refusal is the answer as the error, and an applied answer is decoded.
pub(crate) fn answer<T: DeserializeOwned>(
    stored_fingerprint: &str,
    response: serde_json::Value,
    refusal: Option<serde_json::Value>,
    fingerprint: &str,
) -> Result<T> {
    match refusal {
        _ if stored_fingerprint != fingerprint => Err(CartError::KeyReused),
        Some(refusal) => Err(stored_refusal(refusal)),
        None => serde_json::from_value(response)
            .map_err(|e| CartError::Internal(anyhow::anyhow!("stored cart response: {e}"))),
    }
}

/// A refusal that is its request's answer for good, kept under the request's key like an applied answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "refused", rename_all = "snake_case")]
pub(crate) enum Refusal {
    UnknownProduct { product_id: ProductId },
    NotEnoughStock { product_id: ProductId, in_cart: i64, adding: i64, available: i64 },
    NotInCart { product_id: ProductId },
    EmptyCart,
}

impl From<Refusal> for CartError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::UnknownProduct { product_id } => Self::UnknownProduct(product_id),
            Refusal::NotEnoughStock { product_id, in_cart, adding, available } => {
                Self::NotEnoughStock { product_id, in_cart, adding, available }
            }
            Refusal::NotInCart { product_id } => Self::NotInCart(product_id),
            Refusal::EmptyCart => Self::EmptyCart,
        }
    }
}

pub(crate) fn stored_refusal(refusal: serde_json::Value) -> CartError {
    match serde_json::from_value::<Refusal>(refusal) {
        Ok(refusal) => refusal.into(),
        Err(e) => CartError::Internal(anyhow::anyhow!("stored cart refusal: {e}")),
    }
}

/// Answers a refusal under the request's key, and records it there: a copy of the request that comes later (a
/// first copy delayed past its caller's patience, a gateway clock ahead of the database's) answers the refusal and
/// changes nothing, where it would otherwise apply after its client was told no. The insert waits for a copy
/// still committing under the key (a lost synchronous standby holds every commit, invisible until it ends): a
/// refusal is never answered while a copy that applied may yet commit, and if one did, its answer is this one's.
pub(crate) async fn refuse<T: DeserializeOwned>(
    pool: &PgPool,
    client: &ClientId,
    key: &str,
    fingerprint: &str,
    refusal: Refusal,
) -> Result<T> {
    let stored = serde_json::to_value(&refusal).map_err(anyhow::Error::from)?;
    let recorded = sqlx::query!(
        "INSERT INTO cart_requests (client_id, request_key, fingerprint, response, refusal)
         VALUES ($1, $2, $3, 'null', $4) ON CONFLICT (client_id, request_key) DO NOTHING",
        client.as_str(),
        key,
        fingerprint,
        stored,
    )
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    if recorded {
        return Err(refusal.into());
    }
    replay(&mut *pool.acquire().await?, client, key, fingerprint).await?.ok_or_else(|| vanished(key))
}

pub(crate) fn vanished(key: &str) -> CartError {
    CartError::Internal(anyhow::anyhow!("request {key} vanished"))
}

/// Records an applied request with its answer, in the transaction that applied it. Returns false if a
/// racing copy of the same request recorded first (its transaction is then the one that counts).
pub(crate) async fn remember(
    conn: &mut PgConnection,
    client: &ClientId,
    key: &str,
    fingerprint: &str,
    response: &impl Serialize,
) -> Result<bool> {
    let response = serde_json::to_value(response).map_err(anyhow::Error::from)?;
    Ok(sqlx::query!(
        "INSERT INTO cart_requests (client_id, request_key, fingerprint, response) VALUES ($1, $2, $3, $4)
         ON CONFLICT (client_id, request_key) DO NOTHING",
        client.as_str(),
        key,
        fingerprint,
        response,
    )
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}
