//! The database side of every ordermesh service: a pool even on a fresh machine (the database created if
//! missing, PostgreSQL waited for, every session bounded), migrations, a bounded close, and what an error
//! means (unavailable, retry later; a unique violation, done before).

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    Connection, PgConnection, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub use ordermesh_config::DatabaseSettings;

/// How long startup waits for PostgreSQL to answer before giving up.
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// How long a stopping service waits for its database connections still in use to be given back.
pub const CLOSE_BOUND: Duration = Duration::from_secs(5);

/// Closes `pool` at the end of a shutdown, waiting at most [`CLOSE_BOUND`] for connections still in use:
/// work that outlived the shutdown grace must not keep the process from exiting. The server rolls back
/// what such a connection left open when the process is gone.
pub async fn close_pool(pool: &PgPool) {
    if tokio::time::timeout(CLOSE_BOUND, pool.close()).await.is_err() {
        tracing::warn!(bound = ?CLOSE_BOUND, "database connections still in use at exit; their work is rolled back");
    }
}

/// Opens the pool (creating the database first if asked, waiting for PostgreSQL to come up) and runs `migrator`.
pub async fn connect_and_migrate(settings: &DatabaseSettings, migrator: &Migrator) -> anyhow::Result<PgPool> {
    let pool = connect(settings).await?;
    // Migrations may rightly run longer than a statement of the service, and wait for the advisory lock that
    // sqlx takes so that instances starting together migrate once: on a connection without the bounds,
    // closed afterwards so that its settings never serve a request.
    let mut conn = pool.acquire().await.context("connecting to migrate")?;
    sqlx::raw_sql("SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0")
        .execute(&mut *conn)
        .await
        .context("lifting the statement bounds for migrations")?;
    migrator.run(&mut *conn).await.context("running migrations")?;
    let _ = conn.detach().close().await;
    Ok(pool)
}

/// Opens the pool, creating the database first if asked and waiting (bounded) for PostgreSQL to come up.
/// Idle connections are closed after `settings.idle_timeout`, down to none.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let ms = |d: Duration| d.as_millis().to_string();
    let options = PgConnectOptions::from_str(settings.url.expose())
        .context("parsing the database URL")?
        // Sent at connection start-up: every session of the pool is bounded, whatever runs on it.
        .options([
            ("statement_timeout", ms(settings.statement_timeout)),
            ("lock_timeout", ms(settings.lock_timeout)),
            ("idle_in_transaction_session_timeout", ms(settings.idle_in_transaction_timeout)),
        ]);
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let mut backoff = Duration::from_millis(100);
    let pool = loop {
        let attempt = async {
            if settings.create {
                create_database_if_missing(&options).await?;
            }
            PgPoolOptions::new()
                .max_connections(settings.max_connections)
                .min_connections(0)
                .idle_timeout(settings.idle_timeout)
                // No ping before each use: it costs a round trip per transaction, and a connection that broke
                // (PostgreSQL restarted) fails its first statement instead, which every caller already retries.
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options.clone())
                .await
                .context("connecting to the database")
        };
        match attempt.await {
            Ok(pool) => break pool,
            Err(err) if tokio::time::Instant::now() < deadline && is_transient(&err) => {
                tracing::warn!(error = %err, "PostgreSQL not reachable yet, retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(err) => return Err(err),
        }
    };
    Ok(pool)
}

/// Samples `pool`'s connections (in use, idle, the maximum) into `metrics` at each scrape, as `name`.
pub fn watch_pool(metrics: &ordermesh_telemetry::Metrics, name: &str, pool: &PgPool) {
    let (m, name, pool) = (metrics.clone(), name.to_owned(), pool.clone());
    metrics.add_sampler(move || {
        let (m, name, pool) = (m.clone(), name.clone(), pool.clone());
        async move {
            let size = i64::from(pool.size());
            let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
            m.record_pool(&name, (size - idle).max(0), idle, i64::from(pool.options().get_max_connections()));
        }
    });
}

/// Whether a database error means PostgreSQL cannot serve right now, so a caller should answer "unavailable,
/// retry later" (503, `UNAVAILABLE`) rather than "internal error": the server is not serving, the database
/// is gone (3D000), a write reached a server that is read-only (25006): a standby, in the moment of a
/// failover before the primary's address moves to the promoted one; or a bound ran out: the statement ran
/// past `statement_timeout` (57014), waited past `lock_timeout` for a row someone else holds (55P03), or the
/// session sat in its transaction past `idle_in_transaction_session_timeout` and was ended (25P03).
pub fn db_unavailable(err: &sqlx::Error) -> bool {
    db_not_serving(err) || sqlstate_is(err, |code| matches!(code, "3D000" | "25006" | "57014" | "55P03" | "25P03"))
}

/// The pool gave up or was closed, the connection broke, or the server refused for a reason of its own state:
/// connection exceptions (class 08), insufficient resources (class 53: too many connections, disk full), the
/// server shutting down, crashing or starting (57P01–57P03, 57P05), or the database being dropped (57P04).
fn db_not_serving(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => true,
        _ => sqlstate_is(err, |code| code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")),
    }
}

/// Whether `err` violates one of `constraints`, named as the migrations declare them (a primary key is
/// `<table>_pkey`): the one way a caller reads "a racing copy got there first" or "that CHECK refused" as an
/// answer rather than a failure. By name, not by SQLSTATE: a violation of any other constraint stays an error.
pub fn violates(err: &sqlx::Error, constraints: &[&str]) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.constraint().is_some_and(|c| constraints.contains(&c)))
}

/// Whether `err` is a database error whose SQLSTATE satisfies `test`.
fn sqlstate_is(err: &sqlx::Error, test: impl Fn(&str) -> bool) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.code().is_some_and(|code| test(&code)))
}

/// Whether startup should wait and try again: PostgreSQL is unreachable or not serving yet (starting up,
/// shutting down, out of connections). A missing database is not waited for: with creation off it is a
/// setting to fix, and with creation on it was just created.
fn is_transient(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<sqlx::Error>().is_some_and(db_not_serving))
}

/// Creates the URL's database through the server's `postgres` database, tolerating a concurrent creator.
pub async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let name = options.get_database().context("the database URL names no database")?.to_owned();
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres"))
        .await
        .context("connecting to the server's postgres database")?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        // The name is quoted as an identifier, with embedded quotes doubled.
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // 42P04 duplicate_database, 23505 the race on pg_database's unique index: someone else made it.
            Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("creating database {name}"))),
        }
    }
    admin.close().await?;
    Ok(())
}
