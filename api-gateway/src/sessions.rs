//! The dashboard's sessions on api-gateway's own database: a sign-in with an operator key starts one (the
//! browser gets a random id, the database its digest), sign-out ends it; a lookup finds its key while both live
//! ([`keys::lookup_by_session`](crate::keys::lookup_by_session)).

use std::time::Duration;

use ordermesh_credentials::Secret;
use sqlx::PgPool;

/// Starts a session of `key_id` lasting `lifetime`; returns the id the browser keeps. Sessions already
/// expired (anyone's) are deleted on the way, so the table holds only live ones and a few hours' worth.
pub async fn start(pool: &PgPool, key_id: &str, lifetime: Duration) -> Result<Secret, sqlx::Error> {
    let (_, session) = Secret::generate("oms");
    let seconds = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
    let mut tx = pool.begin().await?;
    sqlx::query!("DELETE FROM dashboard_sessions WHERE expires_at < now()").execute(&mut *tx).await?;
    let digest = session.digest();
    sqlx::query!(
        "INSERT INTO dashboard_sessions (digest, key_id, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))",
        digest.as_slice(),
        key_id,
        seconds as f64,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(session)
}

/// Ends the session with this digest (signing out); ending one that is gone already is no error.
pub async fn end(pool: &PgPool, digest: &[u8; 32]) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM dashboard_sessions WHERE digest = $1", digest.as_slice()).execute(pool).await?;
    Ok(())
}
