//! The catalogue on PostgreSQL: a product's data and its on-hand count, written in one transaction; reads with
//! the counters.

use sqlx::{PgPool, Postgres};

use super::Result;
use crate::domain::{OnHand, PriceCents, Product, ProductId, ProductName};
use crate::error::InventoryError;

/// Creates a product or updates its catalogue data and on-hand count.
#[tracing::instrument(skip(pool, name), fields(product_id = %id))]
pub async fn upsert_product(
    pool: &PgPool,
    id: &ProductId,
    name: &ProductName,
    price: PriceCents,
    on_hand: OnHand,
) -> Result<Product> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "INSERT INTO products (product_id, name, price_cents) VALUES ($1, $2, $3)
         ON CONFLICT (product_id) DO UPDATE
           SET name = EXCLUDED.name, price_cents = EXCLUDED.price_cents, updated_at = now()",
        id.as_str(),
        name.as_str(),
        price.get(),
    )
    .execute(&mut *tx)
    .await?;
    // ON CONFLICT locks the existing row even when the WHERE refuses the update, so the reserved
    // count read below is the one that refused it.
    let updated = sqlx::query!(
        "INSERT INTO stock (product_id, on_hand, counted_on_hand) VALUES ($1, $2, $2)
         ON CONFLICT (product_id) DO UPDATE
           SET on_hand = EXCLUDED.on_hand, counted_on_hand = EXCLUDED.on_hand, counted_at = clock_timestamp(),
               updated_at = now()
           WHERE stock.reserved <= EXCLUDED.on_hand",
        id.as_str(),
        on_hand.get(),
    )
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        let reserved = sqlx::query_scalar!("SELECT reserved FROM stock WHERE product_id = $1", id.as_str())
            .fetch_one(&mut *tx)
            .await?;
        return Err(InventoryError::OnHandBelowReserved { product_id: id.clone(), on_hand: on_hand.get(), reserved });
    }
    let product = fetch_product(&mut *tx, id).await?.ok_or_else(|| InventoryError::UnknownProduct(id.clone()))?;
    tx.commit().await?;
    Ok(product)
}

struct ProductRow {
    product_id: String,
    name: String,
    price_cents: i64,
    on_hand: i64,
    reserved: i64,
    available: i64,
}

impl From<ProductRow> for Product {
    fn from(r: ProductRow) -> Self {
        Product {
            product_id: r.product_id,
            name: r.name,
            price_cents: r.price_cents,
            on_hand: r.on_hand,
            reserved: r.reserved,
            available: r.available,
        }
    }
}

async fn fetch_product<'e>(
    exec: impl sqlx::Executor<'e, Database = Postgres>,
    id: &ProductId,
) -> Result<Option<Product>> {
    let row = sqlx::query_as!(
        ProductRow,
        r#"SELECT p.product_id, p.name, p.price_cents, s.on_hand, s.reserved, s.available AS "available!"
         FROM products p JOIN stock s USING (product_id) WHERE p.product_id = $1"#,
        id.as_str(),
    )
    .fetch_optional(exec)
    .await?;
    Ok(row.map(Product::from))
}

/// One product with its counters.
pub async fn get_product(pool: &PgPool, id: &ProductId) -> Result<Product> {
    fetch_product(pool, id).await?.ok_or_else(|| InventoryError::UnknownProduct(id.clone()))
}

/// The known ones of `ids`, with their counters, in product-id order: one statement for a whole cart.
pub async fn get_products(pool: &PgPool, ids: &[ProductId]) -> Result<Vec<Product>> {
    let ids: Vec<&str> = ids.iter().map(ProductId::as_str).collect();
    let rows = sqlx::query_as!(
        ProductRow,
        r#"SELECT p.product_id, p.name, p.price_cents, s.on_hand, s.reserved, s.available AS "available!"
         FROM products p JOIN stock s USING (product_id) WHERE p.product_id = ANY($1)
         ORDER BY p.product_id COLLATE "C""#,
        &ids as &[&str],
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Product::from).collect())
}

/// A page of the catalogue in product-id order, after `after` (exclusive); the flag says whether more follow.
pub async fn list_products(pool: &PgPool, after: Option<&str>, page_size: u32) -> Result<(Vec<Product>, bool)> {
    let rows = sqlx::query_as!(
        ProductRow,
        r#"SELECT p.product_id, p.name, p.price_cents, s.on_hand, s.reserved, s.available AS "available!"
         FROM products p JOIN stock s USING (product_id)
         WHERE p.product_id > $1 ORDER BY p.product_id LIMIT $2"#,
        after.unwrap_or(""),
        i64::from(page_size) + 1,
    )
    .fetch_all(pool)
    .await?;
    let more = rows.len() > page_size as usize;
    Ok((rows.into_iter().take(page_size as usize).map(Product::from).collect(), more))
}
