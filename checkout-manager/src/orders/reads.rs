//! What the other services ask of the orders: an order as its client sees it, and which checked-out orders
//! were taken in. One statement each.

use super::*;

/// Those of `order_ids` that are stored (taken in from `order.place`).
pub async fn taken_in(pool: &PgPool, order_ids: &[OrderId]) -> Result<Vec<OrderId>> {
    let ids: Vec<&str> = order_ids.iter().map(OrderId::as_str).collect();
    let found: Vec<String> =
        sqlx::query_scalar("SELECT order_id FROM orders WHERE order_id = ANY($1)").bind(&ids).fetch_all(pool).await?;
    let found: std::collections::HashSet<String> = found.into_iter().collect();
    Ok(order_ids.iter().filter(|id| found.contains(id.as_str())).cloned().collect())
}

#[derive(sqlx::FromRow)]
struct ViewRow {
    client_id: String,
    channel: String,
    status: Status,
    total_cents: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    products: Vec<String>,
    quantities: Vec<i64>,
    prices: Vec<i64>,
    steps: Vec<String>,
    outcomes: Vec<String>,
    details: Vec<String>,
    ats: Vec<DateTime<Utc>>,
}

/// The order as shown to clients, with its timeline: one statement, as it is read on every order query.
pub async fn view(pool: &PgPool, order_id: &OrderId) -> Result<OrderView> {
    let sql = format!(
        "SELECT o.client_id, o.channel, o.status, o.total_cents, o.created_at, o.updated_at,
                {LINE_ARRAYS}, {TIMELINE_ARRAYS}
         FROM orders o WHERE o.order_id = $1"
    );
    let row: Option<ViewRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(order_id.as_str()).fetch_optional(pool).await?;
    let Some(ViewRow {
        client_id,
        channel,
        status,
        total_cents,
        created_at,
        updated_at,
        products,
        quantities,
        prices,
        steps,
        outcomes,
        details,
        ats,
    }) = row
    else {
        return Err(CheckoutError::UnknownOrder(order_id.clone()));
    };
    let lines: Vec<(String, i64, i64)> =
        products.into_iter().zip(quantities).zip(prices).map(|((p, q), c)| (p, q, c)).collect();
    let steps: Vec<(String, String, String, DateTime<Utc>)> = steps
        .into_iter()
        .zip(outcomes)
        .zip(details)
        .zip(ats)
        .map(|(((step, outcome), detail), at)| (step, outcome, detail, at))
        .collect();
    let bad = |e: ordermesh_messages::IdError| CheckoutError::Internal(anyhow::anyhow!("stored id: {e}"));
    Ok(OrderView {
        order_id: order_id.clone(),
        client_id: ClientId::parse(client_id).map_err(bad)?,
        status: status.as_str().to_owned(),
        is_final: status.is_final(),
        lines: lines
            .into_iter()
            .map(|(p, quantity, unit_price_cents)| {
                Ok(OrderLine { product_id: ProductId::parse(p).map_err(bad)?, quantity, unit_price_cents })
            })
            .collect::<Result<_>>()?,
        total_cents,
        created_at,
        updated_at,
        timeline: steps
            .into_iter()
            .map(|(step, outcome, detail, at)| TimelineEntry { step, outcome, detail, at })
            .collect(),
        channel: Channel::parse(channel).map_err(bad)?,
    })
}
