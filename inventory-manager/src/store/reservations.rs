//! Reservations on PostgreSQL: hold every line or none, commit, roll back, expire; each one transaction, in
//! the lock order the store's module documentation gives.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use super::Result;
use crate::domain::{Line, Lines, Quantity, Reservation, ReservationId, ReservationStatus};
use crate::error::InventoryError;

/// Holds stock for every line or for none; the same id with the same lines returns the existing reservation.
#[tracing::instrument(skip(pool, lines), fields(reservation_id = %id))]
pub async fn reserve(pool: &PgPool, id: &ReservationId, lines: &Lines, ttl: Duration) -> Result<Reservation> {
    if let Some(held) = reserve_at_once(pool, id, lines, ttl).await? {
        return Ok(held);
    }
    let (product_ids, quantities) = lines.columns();
    let mut tx = pool.begin().await?;
    // One round trip writes the header and its lines. A concurrent insert of the same id waits here
    // for the other transaction to end, so racing duplicates resolve to one reservation.
    let created = sqlx::query!(
        "WITH r AS (
             INSERT INTO reservations (reservation_id, expires_at)
             VALUES ($1, now() + make_interval(secs => $2::float8))
             ON CONFLICT (reservation_id) DO NOTHING
             RETURNING reservation_id, created_at, expires_at
         ), l AS (
             INSERT INTO reservation_lines (reservation_id, product_id, quantity)
             SELECT r.reservation_id, x.product_id, x.quantity
             FROM r CROSS JOIN UNNEST($3::text[], $4::bigint[]) AS x (product_id, quantity)
         )
         SELECT created_at, expires_at FROM r",
        id.as_str(),
        ttl.as_secs_f64(),
        &product_ids[..],
        &quantities[..],
    )
    .fetch_optional(&mut *tx)
    .await?
    .map(|r| (r.created_at, r.expires_at));

    let Some((created_at, expires_at)) = created else {
        tx.rollback().await?;
        let existing = get_reservation(pool, id).await?;
        return if existing.lines == *lines {
            Ok(existing)
        } else {
            Err(InventoryError::ReservationConflict(id.clone()))
        };
    };

    // The stock rows are touched last and in lock order, so the hot locks are held for as short a time as possible.
    for line in lines.iter() {
        let held = sqlx::query!(
            "UPDATE stock SET reserved = reserved + $2, updated_at = now()
             WHERE product_id = $1 AND available >= $2",
            line.product_id.as_str(),
            line.quantity.get(),
        )
        .execute(&mut *tx)
        .await?;
        if held.rows_affected() == 0 {
            let available = sqlx::query_scalar!(
                r#"SELECT available AS "available!" FROM stock WHERE product_id = $1"#,
                line.product_id.as_str()
            )
            .fetch_optional(&mut *tx)
            .await?;
            return Err(match available {
                None => InventoryError::UnknownProduct(line.product_id.clone()),
                Some(available) => InventoryError::InsufficientStock {
                    product_id: line.product_id.clone(),
                    requested: line.quantity.get(),
                    available,
                },
            });
        }
    }
    tx.commit().await?;
    Ok(held(id, lines, created_at, expires_at))
}

/// A reservation just held.
fn held(id: &ReservationId, lines: &Lines, created_at: DateTime<Utc>, expires_at: DateTime<Utc>) -> Reservation {
    tracing::debug!("reservation held");
    Reservation {
        reservation_id: id.clone(),
        status: ReservationStatus::Held,
        lines: lines.clone(),
        created_at,
        expires_at,
        committed_at: None,
        rolled_back_at: None,
        expired_at: None,
    }
}

/// The common case in one statement (one round trip instead of three and one per line): a new reservation
/// whose products all have the units. The stock rows are locked first, in lock order, and read as locked;
/// only if every line is covered are they updated and the reservation written, all in the one statement.
/// Anything else (a known id, too few units, an unknown product) returns `None` and takes the general path,
/// which tells those cases apart. Two racing copies of one id cannot both hold: the second waits on the
/// stock rows, then fails on the reservation's key, which undoes its stock update with it, and it too takes
/// the general path (which finds the first's).
async fn reserve_at_once(
    pool: &PgPool,
    id: &ReservationId,
    lines: &Lines,
    ttl: Duration,
) -> Result<Option<Reservation>> {
    let (product_ids, quantities) = lines.columns();
    let row = sqlx::query!(
        r#"WITH want AS (
           SELECT * FROM UNNEST($2::text[], $3::bigint[]) AS w (product_id, quantity)
         ), locked AS (
           SELECT s.product_id, s.available >= w.quantity AS enough
           FROM stock s JOIN want w USING (product_id)
           WHERE NOT EXISTS (SELECT 1 FROM reservations WHERE reservation_id = $1)
           ORDER BY s.product_id COLLATE "C"
           FOR UPDATE OF s
         ), go AS (
           SELECT count(*) = cardinality($2::text[]) AND coalesce(bool_and(enough), false) AS ok FROM locked
         ), held AS (
           UPDATE stock SET reserved = stock.reserved + w.quantity, updated_at = now()
           FROM want w
           WHERE stock.product_id = w.product_id AND (SELECT ok FROM go)
         ), r AS (
           INSERT INTO reservations (reservation_id, expires_at)
           SELECT $1::text, now() + make_interval(secs => $4::float8) WHERE (SELECT ok FROM go)
           RETURNING created_at, expires_at
         ), l AS (
           INSERT INTO reservation_lines (reservation_id, product_id, quantity)
           SELECT $1, w.product_id, w.quantity FROM want w WHERE (SELECT ok FROM go)
         )
         SELECT created_at, expires_at FROM r"#,
        id.as_str(),
        &product_ids[..],
        &quantities[..],
        ttl.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await;
    let (created_at, expires_at) = match row {
        Ok(Some(row)) => (row.created_at, row.expires_at),
        Ok(None) => return Ok(None),
        // A racing copy of the same id held first (its key, or a line's, is taken): the general path finds it.
        Err(e) if ordermesh_db::violates(&e, &["reservations_pkey", "reservation_lines_pkey"]) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(Some(held(id, lines, created_at, expires_at)))
}

/// What to do with a held reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Commit,
    RollBack,
}

/// Turns a held reservation into a sale. Committing a committed one is a no-op.
#[tracing::instrument(skip(pool), fields(reservation_id = %id))]
pub async fn commit(pool: &PgPool, id: &ReservationId) -> Result<Reservation> {
    if let Some(committed) = commit_single_line(pool, id).await? {
        return Ok(committed);
    }
    settle(pool, id, Settle::Commit).await
}

/// The common case in one statement: a held, unexpired reservation of one line. One stock row is the only
/// lock besides the reservation's, so lock order cannot matter; anything else (several lines, expired,
/// already settled, unknown) returns `None` and takes the general path.
async fn commit_single_line(pool: &PgPool, id: &ReservationId) -> Result<Option<Reservation>> {
    struct Committed {
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        committed_at: DateTime<Utc>,
        product_id: String,
        quantity: i64,
    }
    let row = sqlx::query_as!(
        Committed,
        r#"WITH r AS (
           UPDATE reservations SET status = 'committed', committed_at = clock_timestamp()
           WHERE reservation_id = $1 AND status = 'held' AND expires_at > now()
             AND (SELECT count(*) FROM reservation_lines WHERE reservation_id = $1) = 1
           RETURNING reservation_id, created_at, expires_at, committed_at
         ), s AS (
           UPDATE stock SET on_hand = on_hand - l.quantity, reserved = reserved - l.quantity, updated_at = now()
           FROM r JOIN reservation_lines l USING (reservation_id)
           WHERE stock.product_id = l.product_id
           RETURNING stock.product_id, l.quantity
         )
         SELECT r.created_at, r.expires_at, r.committed_at AS "committed_at!", s.product_id, s.quantity FROM r, s"#,
        id.as_str(),
    )
    .fetch_optional(pool)
    .await?;
    let Some(Committed { created_at, expires_at, committed_at, product_id, quantity }) = row else { return Ok(None) };
    Ok(Some(Reservation {
        reservation_id: id.clone(),
        status: ReservationStatus::Committed,
        lines: Lines::from_stored(vec![stored_line((product_id, quantity))?]),
        created_at,
        expires_at,
        committed_at: Some(committed_at),
        rolled_back_at: None,
        expired_at: None,
    }))
}

/// Releases a held reservation. Rolling back a rolled-back or expired one is a no-op.
#[tracing::instrument(skip(pool), fields(reservation_id = %id))]
pub async fn roll_back(pool: &PgPool, id: &ReservationId) -> Result<Reservation> {
    settle(pool, id, Settle::RollBack).await
}

async fn settle(pool: &PgPool, id: &ReservationId, action: Settle) -> Result<Reservation> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query!(
        r#"SELECT status, expires_at <= now() AS "due!" FROM reservations WHERE reservation_id = $1 FOR UPDATE"#,
        id.as_str()
    )
    .fetch_optional(&mut *tx)
    .await?
    .map(|r| (r.status, r.due));
    let Some((status, due)) = row else {
        return Err(InventoryError::UnknownReservation(id.clone()));
    };
    let status = ReservationStatus::from_db(&status)?;
    let not_held = |status| InventoryError::ReservationNotHeld {
        id: id.clone(),
        status,
        action: match action {
            Settle::Commit => "committed",
            Settle::RollBack => "rolled back",
        },
    };
    match (status, action) {
        (ReservationStatus::Committed, Settle::Commit)
        | (ReservationStatus::RolledBack | ReservationStatus::Expired, Settle::RollBack) => {
            tx.commit().await?;
            return get_reservation(pool, id).await;
        }
        (ReservationStatus::Committed, Settle::RollBack)
        | (ReservationStatus::RolledBack | ReservationStatus::Expired, Settle::Commit) => {
            return Err(not_held(status));
        }
        (ReservationStatus::Held, Settle::Commit) if due => {
            // Its time ran out before the sweeper got to it: expire it now, so what is reported is also what is stored.
            release(&mut tx, std::slice::from_ref(id), ReservationStatus::Expired).await?;
            tx.commit().await?;
            return Err(not_held(ReservationStatus::Expired));
        }
        (ReservationStatus::Held, Settle::Commit) => {
            let lines = lines_of(&mut tx, id).await?;
            for line in lines.iter() {
                sqlx::query!(
                    "UPDATE stock SET on_hand = on_hand - $2, reserved = reserved - $2, updated_at = now()
                     WHERE product_id = $1",
                    line.product_id.as_str(),
                    line.quantity.get(),
                )
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query!(
                "UPDATE reservations SET status = 'committed', committed_at = clock_timestamp() WHERE reservation_id = $1",
                id.as_str()
            )
            .execute(&mut *tx)
            .await?;
        }
        (ReservationStatus::Held, Settle::RollBack) => {
            release(&mut tx, std::slice::from_ref(id), ReservationStatus::RolledBack).await?;
        }
    }
    tx.commit().await?;
    get_reservation(pool, id).await
}

async fn lines_of(tx: &mut Transaction<'_, Postgres>, id: &ReservationId) -> Result<Lines> {
    let rows: Vec<(String, i64)> = sqlx::query!(
        r#"SELECT product_id, quantity FROM reservation_lines WHERE reservation_id = $1 ORDER BY product_id COLLATE "C""#,
        id.as_str()
    )
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|r| (r.product_id, r.quantity))
    .collect();
    Ok(Lines::from_stored(rows.into_iter().map(stored_line).collect::<Result<_>>()?))
}

fn stored_line((product_id, quantity): (String, i64)) -> Result<Line> {
    Ok(Line { product_id: crate::domain::product_id(product_id)?, quantity: Quantity::parse(quantity)? })
}

/// Gives back the stock of held reservations (already locked by the caller) and marks them `to`.
async fn release(tx: &mut Transaction<'_, Postgres>, ids: &[ReservationId], to: ReservationStatus) -> Result<()> {
    let ids: Vec<&str> = ids.iter().map(ReservationId::as_str).collect();
    let totals = sqlx::query!(
        r#"SELECT product_id, sum(quantity)::bigint AS "quantity!" FROM reservation_lines
         WHERE reservation_id = ANY($1) GROUP BY product_id ORDER BY product_id COLLATE "C""#,
        &ids as &[&str]
    )
    .fetch_all(&mut **tx)
    .await?;
    for total in totals {
        sqlx::query!(
            "UPDATE stock SET reserved = reserved - $2, updated_at = now() WHERE product_id = $1",
            total.product_id,
            total.quantity,
        )
        .execute(&mut **tx)
        .await?;
    }
    if !matches!(to, ReservationStatus::RolledBack | ReservationStatus::Expired) {
        return Err(anyhow::anyhow!("release cannot end in {to}").into());
    }
    sqlx::query!(
        "UPDATE reservations
         SET status = $2::text,
             rolled_back_at = CASE WHEN $2 = 'rolled_back' THEN now() END,
             expired_at = CASE WHEN $2 = 'expired' THEN now() END
         WHERE reservation_id = ANY($1) AND status = 'held'",
        &ids as &[&str],
        to.as_str(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Releases up to `batch` held reservations whose time ran out; returns how many it expired.
///
/// `SKIP LOCKED` lets several inventory instances sweep side by side, and leaves alone a reservation
/// that a commit or roll-back is settling right now.
pub async fn expire_due(pool: &PgPool, batch: u32) -> Result<usize> {
    let mut tx = pool.begin().await?;
    let due = sqlx::query_scalar!(
        "SELECT reservation_id FROM reservations
         WHERE status = 'held' AND expires_at <= now()
         ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        i64::from(batch)
    )
    .fetch_all(&mut *tx)
    .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let ids = due.into_iter().map(ReservationId::parse).collect::<Result<Vec<_>>>()?;
    release(&mut tx, &ids, ReservationStatus::Expired).await?;
    tx.commit().await?;
    tracing::info!(count = ids.len(), "expired reservations released");
    Ok(ids.len())
}

/// How long until the first held reservation expires, or `None` when none is held.
pub async fn next_expiry(pool: &PgPool) -> Result<Option<Duration>> {
    let secs = sqlx::query_scalar!(
        "SELECT EXTRACT(EPOCH FROM min(expires_at) - now())::float8 FROM reservations WHERE status = 'held'",
    )
    .fetch_one(pool)
    .await?;
    Ok(ordermesh_lifecycle::due_in_secs(secs))
}

struct ReservationRow {
    reservation_id: String,
    status: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    committed_at: Option<DateTime<Utc>>,
    rolled_back_at: Option<DateTime<Utc>>,
    expired_at: Option<DateTime<Utc>>,
    product_ids: Vec<String>,
    quantities: Vec<i64>,
}

/// A reservation with its lines.
pub async fn get_reservation(pool: &PgPool, id: &ReservationId) -> Result<Reservation> {
    let row = sqlx::query_as!(
        ReservationRow,
        r#"SELECT r.reservation_id, r.status, r.created_at, r.expires_at, r.committed_at, r.rolled_back_at, r.expired_at,
                array_agg(l.product_id ORDER BY l.product_id COLLATE "C") AS "product_ids!",
                array_agg(l.quantity ORDER BY l.product_id COLLATE "C") AS "quantities!"
         FROM reservations r JOIN reservation_lines l USING (reservation_id)
         WHERE r.reservation_id = $1
         GROUP BY r.reservation_id"#,
        id.as_str(),
    )
    .fetch_optional(pool)
    .await?;
    let row = row.ok_or_else(|| InventoryError::UnknownReservation(id.clone()))?;
    let lines = row.product_ids.into_iter().zip(row.quantities).map(stored_line).collect::<Result<_>>()?;
    Ok(Reservation {
        reservation_id: ReservationId::parse(row.reservation_id)?,
        status: ReservationStatus::from_db(&row.status)?,
        lines: Lines::from_stored(lines),
        created_at: row.created_at,
        expires_at: row.expires_at,
        committed_at: row.committed_at,
        rolled_back_at: row.rolled_back_at,
        expired_at: row.expired_at,
    })
}
