//! The provider's books: a balance per client and one charge per payment id, so a charge is taken at
//! most once however often it is asked for, and a refund gives back at most what was taken.

use ordermesh_db::violates;
use ordermesh_messages::{
    ClientId,
    payloads::{ChargeRequest, PaymentOutcome, RefundRequest},
};
use sqlx::PgPool;

/// Sets a client's balance (tests and demos).
pub async fn set_balance(pool: &PgPool, client: &ClientId, balance_cents: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO payment_accounts (client_id, balance_cents) VALUES ($1, $2)
         ON CONFLICT (client_id) DO UPDATE SET balance_cents = EXCLUDED.balance_cents, updated_at = now()",
        client.as_str(),
        balance_cents,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A client's balance, if it has an account yet.
pub async fn balance(pool: &PgPool, client: &ClientId) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!("SELECT balance_cents FROM payment_accounts WHERE client_id = $1", client.as_str())
        .fetch_optional(pool)
        .await
}

/// The charges' key: one charge per payment id.
const CHARGE_KEY: &str = "payment_charges_pkey";

/// Takes the money if the balance allows, once per payment id; a repeat returns the first outcome.
/// A new client starts with `default_balance_cents`.
pub async fn charge(
    pool: &PgPool,
    request: &ChargeRequest,
    default_balance_cents: i64,
) -> sqlx::Result<PaymentOutcome> {
    match charge_at_once(pool, request, default_balance_cents).await {
        Ok(true) => return Ok(PaymentOutcome::Succeeded),
        // Not the common case; the general path below tells the others apart.
        Ok(false) => {}
        Err(e) if violates(&e, &[CHARGE_KEY, "payment_accounts_balance_not_negative"]) => {}
        Err(e) => return Err(e),
    }
    match try_charge(pool, request, default_balance_cents).await {
        // A racing copy of the same charge booked first: its outcome is this one's too.
        Err(e) if violates(&e, &[CHARGE_KEY]) => try_charge(pool, request, default_balance_cents).await,
        other => other,
    }
}

/// The common case in one statement (one round trip instead of six): a payment id not seen before, whose
/// client has the money (a new client starts with `default_balance_cents`). The balance is taken and the
/// charge booked together or not at all; `false` means nothing was done (a known payment id, too little
/// money). A racing copy of the same charge waits on the account row, then fails on the charge's key,
/// which undoes its debit with it; a new client whose first charge exceeds the default fails the
/// balance's CHECK. Both leave nothing behind and are the caller's to take the general path.
async fn charge_at_once(pool: &PgPool, request: &ChargeRequest, default_balance_cents: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"WITH a AS (
           INSERT INTO payment_accounts AS a (client_id, balance_cents)
           SELECT $2::text, $4::bigint - $3::bigint
           WHERE NOT EXISTS (SELECT 1 FROM payment_charges WHERE payment_id = $1::text)
           ON CONFLICT (client_id) DO UPDATE SET balance_cents = a.balance_cents - $3, updated_at = now()
              WHERE a.balance_cents >= $3
           RETURNING a.client_id
         ), c AS (
           INSERT INTO payment_charges (payment_id, client_id, amount_cents, outcome, reason)
           SELECT $1, client_id, $3, 'succeeded', '' FROM a
           RETURNING payment_id
         )
         SELECT EXISTS (SELECT 1 FROM c) AS "charged!""#,
        request.payment_id,
        request.client_id.as_str(),
        request.amount_cents,
        default_balance_cents,
    )
    .fetch_one(pool)
    .await
}

async fn try_charge(
    pool: &PgPool,
    request: &ChargeRequest,
    default_balance_cents: i64,
) -> sqlx::Result<PaymentOutcome> {
    let mut tx = pool.begin().await?;
    let previous = sqlx::query!(
        "SELECT outcome, reason FROM payment_charges WHERE payment_id = $1 FOR UPDATE",
        request.payment_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(previous) = previous {
        tx.commit().await?;
        return Ok(match previous.outcome.as_str() {
            "succeeded" => PaymentOutcome::Succeeded,
            "refunded" => PaymentOutcome::Declined { reason: "the charge was refunded".into() },
            _ => PaymentOutcome::Declined { reason: previous.reason },
        });
    }
    sqlx::query!(
        "INSERT INTO payment_accounts (client_id, balance_cents) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        request.client_id.as_str(),
        default_balance_cents,
    )
    .execute(&mut *tx)
    .await?;
    let charged = sqlx::query!(
        "UPDATE payment_accounts SET balance_cents = balance_cents - $2, updated_at = now()
         WHERE client_id = $1 AND balance_cents >= $2",
        request.client_id.as_str(),
        request.amount_cents,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let (outcome, stored, reason) = if charged {
        (PaymentOutcome::Succeeded, "succeeded", String::new())
    } else {
        let reason = "insufficient funds".to_owned();
        (PaymentOutcome::Declined { reason: reason.clone() }, "declined", reason)
    };
    sqlx::query!(
        "INSERT INTO payment_charges (payment_id, client_id, amount_cents, outcome, reason) VALUES ($1, $2, $3, $4, $5)",
        request.payment_id,
        request.client_id.as_str(),
        request.amount_cents,
        stored,
        reason,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Gives a successful charge back; a payment id never charged (or already refunded) is a no-op.
pub async fn refund(pool: &PgPool, request: &RefundRequest) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let refunded = sqlx::query!(
        "UPDATE payment_charges SET outcome = 'refunded', refunded_at = now()
         WHERE payment_id = $1 AND outcome = 'succeeded' RETURNING client_id, amount_cents",
        request.payment_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(charge) = &refunded {
        sqlx::query!(
            "UPDATE payment_accounts SET balance_cents = balance_cents + $2, updated_at = now() WHERE client_id = $1",
            charge.client_id,
            charge.amount_cents,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(refunded.is_some())
}
