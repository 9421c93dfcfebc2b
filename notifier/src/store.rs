//! notifier's database: shoppers' profiles, and the record that makes each order event one email.
//!
//! An event is claimed before its email is handed to the SMTP server and marked sent right after, both
//! keyed by the event's message id. A second delivery of a sent event is acknowledged without a send; one
//! that finds a live claim waits for it to end; one that finds a claim run out (the sender died
//! mid-send) sends again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ordermesh_messages::{ClientId, Email, payloads::Profile};
use sqlx::PgPool;

/// A shopper's profile (`email: None` if never set or cleared).
pub async fn profile(pool: &PgPool, client_id: &ClientId) -> sqlx::Result<Profile> {
    let row = sqlx::query!("SELECT email, updated_at FROM client_profiles WHERE client_id = $1", client_id.as_str())
        .fetch_optional(pool)
        .await?;
    let (email, updated_at) = row.map_or((None, None), |r| (r.email, Some(r.updated_at)));
    Ok(Profile { client_id: client_id.clone(), email: email.and_then(|e| Email::parse(e).ok()), updated_at })
}

/// Sets (or with `None` clears) a shopper's email address.
pub async fn put_profile(pool: &PgPool, client_id: &ClientId, email: Option<&Email>) -> sqlx::Result<Profile> {
    let updated_at: DateTime<Utc> = sqlx::query_scalar!(
        "INSERT INTO client_profiles (client_id, email) VALUES ($1, $2)
         ON CONFLICT (client_id) DO UPDATE SET email = EXCLUDED.email, updated_at = now()
         RETURNING updated_at",
        client_id.as_str(),
        email.map(Email::as_str),
    )
    .fetch_one(pool)
    .await?;
    Ok(Profile { client_id: client_id.clone(), email: email.cloned(), updated_at: Some(updated_at) })
}

/// What to do with an event's email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Send it to this address; this delivery holds the claim.
    Send(String),
    /// Nothing to do: `skipped` (no address, recorded now), or `duplicate` (already sent, skipped or refused).
    Done(&'static str),
    /// Another delivery is sending it; its claim runs out after this long.
    Busy(Duration),
}

/// Claims the email of event `event_id` for `lease`, in one statement: records it (with the shopper's
/// address as of now, or as skipped without one), or takes over a claim that ran out.
pub async fn claim(
    pool: &PgPool,
    event_id: uuid::Uuid,
    order_id: &str,
    kind: &str,
    client_id: &ClientId,
    lease: Duration,
) -> sqlx::Result<Claim> {
    let row = sqlx::query!(
        r#"WITH profile AS (
           SELECT (SELECT email FROM client_profiles WHERE client_id = $4) AS email
         ), claimed AS (
           INSERT INTO notifications (event_id, order_id, kind, recipient, state, claimed_until)
           SELECT $1, $2, $3, p.email, CASE WHEN p.email IS NULL THEN 'skipped' ELSE 'sending' END,
                  CASE WHEN p.email IS NULL THEN NULL ELSE now() + make_interval(secs => $5) END
           FROM profile p
           ON CONFLICT (event_id) DO UPDATE
             SET attempts = notifications.attempts + 1, claimed_until = now() + make_interval(secs => $5)
             WHERE notifications.state = 'sending' AND notifications.claimed_until <= now()
           RETURNING state, recipient
         )
         SELECT c.state AS "state!", c.recipient AS "recipient?", true AS "claimed!", NULL::float8 AS "left?"
         FROM claimed c
         UNION ALL
         SELECT n.state, n.recipient, false, EXTRACT(EPOCH FROM n.claimed_until - now())::float8
         FROM notifications n WHERE n.event_id = $1 AND NOT EXISTS (SELECT 1 FROM claimed)"#,
        event_id,
        order_id,
        kind,
        client_id.as_str(),
        lease.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await?
    .map(|r| (r.state, r.recipient, r.claimed, r.left));
    Ok(match row {
        Some((state, Some(recipient), true, _)) if state == "sending" => Claim::Send(recipient),
        Some((state, _, false, Some(left))) if state == "sending" => {
            Claim::Busy(Duration::from_secs_f64(left.max(0.0)))
        }
        // A racing delivery inserted the row after this statement's snapshot: it holds the claim now.
        None => Claim::Busy(Duration::from_millis(200)),
        Some((state, _, true, _)) if state == "skipped" => Claim::Done("skipped"),
        Some(_) => Claim::Done("duplicate"),
    })
}

/// Marks the event's email as handed to the SMTP server.
pub async fn mark_sent(pool: &PgPool, event_id: uuid::Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE notifications SET state = 'sent', sent_at = now(), claimed_until = NULL WHERE event_id = $1",
        event_id
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Gives the claim back after a passing failure, so the next delivery sends at once.
pub async fn release(pool: &PgPool, event_id: uuid::Uuid, detail: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE notifications SET claimed_until = now(), detail = $2 WHERE event_id = $1 AND state = 'sending'",
        event_id,
        detail,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that the server refused the email for good.
pub async fn mark_rejected(pool: &PgPool, event_id: uuid::Uuid, detail: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE notifications SET state = 'rejected', claimed_until = NULL, detail = $2 WHERE event_id = $1",
        event_id,
        detail,
    )
    .execute(pool)
    .await?;
    Ok(())
}
