//! What the other services ask of the orders: an order as its client sees it, and which checked-out orders
//! were taken in. One statement each.

use super::*;

/// Those of `order_ids` that are stored (taken in from `order.place`).
pub async fn taken_in(pool: &PgPool, order_ids: &[OrderId]) -> Result<Vec<OrderId>> {
    let ids: Vec<&str> = order_ids.iter().map(OrderId::as_str).collect();
    let found = sqlx::query_scalar!("SELECT order_id FROM orders WHERE order_id = ANY($1)", &ids as &[&str])
        .fetch_all(pool)
        .await?;
    let found: std::collections::HashSet<String> = found.into_iter().collect();
    Ok(order_ids.iter().filter(|id| found.contains(id.as_str())).cloned().collect())
}

/// The order as shown to clients, with its lines and timeline: read as the saga reads it, in one statement.
pub async fn view(pool: &PgPool, order_id: &OrderId) -> Result<OrderView> {
    let Some(order) = load(pool, order_id.as_str()).await? else {
        return Err(CheckoutError::UnknownOrder(order_id.clone()));
    };
    Ok(OrderView {
        order_id: order.order_id,
        client_id: order.client_id,
        status: order.status.as_str().to_owned(),
        is_final: order.status.is_final(),
        lines: order
            .lines
            .into_iter()
            .map(|l| OrderLine { product_id: l.product_id, quantity: l.quantity, unit_price_cents: l.unit_price_cents })
            .collect(),
        total_cents: order.total_cents,
        created_at: order.created_at,
        updated_at: order.changed_at,
        timeline: order.timeline,
        channel: order.channel,
    })
}
