//! The database pool gives connections back to the server once a burst is over.

use std::time::Duration;

use ordermesh_config::DatabaseSettings;
use ordermesh_lifecycle::connect;
use ordermesh_testkit::testdb;

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (url, name) = testdb::unique_database("om_test_pool_");
    let settings =
        DatabaseSettings { max_connections: 6, idle_timeout: Duration::from_millis(500), ..DatabaseSettings::new(url) };
    let pool = connect(&settings).await.expect("pool");

    // A burst: six connections busy at once.
    let burst = (0..6).map(|_| {
        let pool = pool.clone();
        async move { sqlx::query("SELECT pg_sleep(0.2)").execute(&pool).await.expect("query") }
    });
    futures::future::join_all(burst).await;
    assert_eq!(pool.size(), 6, "the burst opened every connection");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pool.size() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "{} connections still open 10 s after the burst", pool.size());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.close().await;
    testdb::drop_database(&name).await;
}

#[tokio::test]
async fn a_server_that_cannot_serve_is_unavailable_and_a_bad_query_is_not() {
    let (url, name) = testdb::unique_database("om_test_unavailable_");
    // The database does not exist (yet): 3D000.
    let missing = sqlx::PgPool::connect(&url).await.expect_err("no such database");
    assert!(ordermesh_lifecycle::db_unavailable(&missing), "{missing:?}");

    let pool = connect(&DatabaseSettings::new(url)).await.expect("pool");
    // A mistake in the statement is ours, not the server's.
    let bad = sqlx::query("SELECT no_such_column FROM pg_class").execute(&pool).await.expect_err("bad query");
    assert!(!ordermesh_lifecycle::db_unavailable(&bad), "{bad:?}");
    // The server ends the session (as it does when shutting down): 57P01 on the connection's next statement.
    let mut conn = pool.acquire().await.expect("connection");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *conn).await.expect("pid");
    sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&pool).await.expect("terminate");
    let ended = sqlx::query("SELECT 1").execute(&mut *conn).await.expect_err("the session was ended");
    assert!(ordermesh_lifecycle::db_unavailable(&ended), "{ended:?}");
    drop(conn);
    // A write on a read-only server (a standby before the failover's address moves): 25006.
    let mut conn = pool.acquire().await.expect("connection");
    sqlx::query("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY").execute(&mut *conn).await.expect("set");
    let read_only = sqlx::query("CREATE TABLE written (x int)").execute(&mut *conn).await.expect_err("read-only");
    assert!(matches!(&read_only, sqlx::Error::Database(e) if e.code().as_deref() == Some("25006")), "{read_only:?}");
    assert!(ordermesh_lifecycle::db_unavailable(&read_only), "{read_only:?}");
    drop(conn);
    pool.close().await;
    testdb::drop_database(&name).await;
}

#[tokio::test]
async fn startup_does_not_wait_for_a_database_it_may_not_create() {
    let (url, _name) = testdb::unique_database("om_test_missing_");
    let settings = DatabaseSettings { create: false, ..DatabaseSettings::new(url) };
    let started = tokio::time::Instant::now();
    let err = connect(&settings).await.expect_err("the database does not exist and may not be created");
    // It fails on the first attempt instead of retrying for the 30 s it gives an unreachable server.
    assert!(started.elapsed() < Duration::from_secs(10), "waited {:?}: {err:#}", started.elapsed());
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
}
