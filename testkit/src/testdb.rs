//! Throwaway databases for tests: a unique name per test, dropped when the test passes, and
//! leftovers of failed runs dropped by a later run once they are an hour old.

use std::{
    str::FromStr,
    time::{SystemTime, UNIX_EPOCH},
};

use sqlx::{ConnectOptions, Connection, PgConnection, postgres::PgConnectOptions};

/// A database a test leftover is dropped after.
const STALE_AFTER_SECS: u64 = 3600;

/// The PostgreSQL server tests use: `TEST_DATABASE_URL` (any database name) or the local one.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A URL for a new, uniquely named database `<prefix><unix seconds>_<random>` on the test server
/// (the service under test creates it); returns the URL and the name.
pub fn unique_database(prefix: &str) -> (String, String) {
    let name = format!("{prefix}{}_{}", now(), &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let url =
        PgConnectOptions::from_str(&server_url()).expect("valid TEST_DATABASE_URL").database(&name).to_url_lossy();
    (url.to_string(), name)
}

async fn admin() -> PgConnection {
    PgConnection::connect(&server_url()).await.expect("the test PostgreSQL server is reachable")
}

/// Drops a test database, ending its connections.
pub async fn drop_database(name: &str) {
    let mut conn = admin().await;
    let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", name.replace('"', "\"\""));
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.expect("test database dropped");
}

/// Drops databases named `<prefix><unix seconds>_…` older than an hour: what failed runs left.
pub async fn drop_stale_databases(prefix: &str) {
    let mut conn = admin().await;
    let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
        .bind(prefix)
        .fetch_all(&mut conn)
        .await
        .expect("listing test databases");
    for name in names {
        let born = name[prefix.len()..].split('_').next().and_then(|s| s.parse::<u64>().ok());
        if born.is_some_and(|t| now().saturating_sub(t) > STALE_AFTER_SECS) {
            drop_database(&name).await;
        }
    }
}
