//! The database pool gives connections back to the server once a burst is over.

use std::time::{Duration, Instant};

use sqlx::Connection;

use ordermesh_config::DatabaseSettings;
use ordermesh_db::connect;
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
    assert!(ordermesh_db::db_unavailable(&missing), "{missing:?}");

    let pool = connect(&DatabaseSettings::new(url)).await.expect("pool");
    // A mistake in the statement is ours, not the server's.
    let bad = sqlx::query("SELECT no_such_column FROM pg_class").execute(&pool).await.expect_err("bad query");
    assert!(!ordermesh_db::db_unavailable(&bad), "{bad:?}");
    // The server ends the session (as it does when shutting down): 57P01 on the connection's next statement.
    let mut conn = pool.acquire().await.expect("connection");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *conn).await.expect("pid");
    sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&pool).await.expect("terminate");
    let ended = sqlx::query("SELECT 1").execute(&mut *conn).await.expect_err("the session was ended");
    assert!(ordermesh_db::db_unavailable(&ended), "{ended:?}");
    drop(conn);
    // A write on a read-only server (a standby before the failover's address moves): 25006.
    let mut conn = pool.acquire().await.expect("connection");
    sqlx::query("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY").execute(&mut *conn).await.expect("set");
    let read_only = sqlx::query("CREATE TABLE written (x int)").execute(&mut *conn).await.expect_err("read-only");
    assert!(matches!(&read_only, sqlx::Error::Database(e) if e.code().as_deref() == Some("25006")), "{read_only:?}");
    assert!(ordermesh_db::db_unavailable(&read_only), "{read_only:?}");
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

#[tokio::test]
async fn a_row_held_elsewhere_or_a_long_statement_is_cut_at_its_bound_as_unavailable_not_a_hang() {
    let (url, name) = testdb::unique_database("om_test_bounds_");
    let settings = DatabaseSettings {
        statement_timeout: Duration::from_millis(1000),
        lock_timeout: Duration::from_millis(300),
        idle_in_transaction_timeout: Duration::from_millis(1500),
        ..DatabaseSettings::new(url.clone())
    };
    let pool = connect(&settings).await.expect("pool");
    sqlx::raw_sql("CREATE TABLE stock (id int PRIMARY KEY, n int NOT NULL); INSERT INTO stock VALUES (1, 10)")
        .execute(&pool)
        .await
        .expect("table");

    // An operator's open transaction on the row, in a session of its own (psql, not bounded by the pool).
    let mut operator = sqlx::PgConnection::connect(&url).await.expect("operator session");
    sqlx::raw_sql("BEGIN; UPDATE stock SET n = n WHERE id = 1").execute(&mut operator).await.expect("row held");
    let started = Instant::now();
    let held = tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::query("UPDATE stock SET n = n - 1 WHERE id = 1").execute(&pool),
    )
    .await
    .expect("the write gives up at the lock bound instead of waiting for the operator")
    .expect_err("the row is held");
    assert!(started.elapsed() < Duration::from_secs(3), "gave up after {:?}", started.elapsed());
    assert!(matches!(&held, sqlx::Error::Database(e) if e.code().as_deref() == Some("55P03")), "{held:?}");
    assert!(ordermesh_db::db_unavailable(&held), "{held:?}");

    // A statement running past its bound is cancelled by the server.
    let long = tokio::time::timeout(Duration::from_secs(10), sqlx::query("SELECT pg_sleep(5)").execute(&pool))
        .await
        .expect("the statement is cut at its bound")
        .expect_err("cancelled");
    assert!(matches!(&long, sqlx::Error::Database(e) if e.code().as_deref() == Some("57014")), "{long:?}");
    assert!(ordermesh_db::db_unavailable(&long), "{long:?}");

    // A session of the pool left idle inside a transaction (its process stalled) is ended, locks released.
    let mut stalled = pool.begin().await.expect("transaction");
    operator_free(&mut operator).await;
    sqlx::query("SELECT n FROM stock WHERE id = 1 FOR UPDATE").execute(&mut *stalled).await.expect("locked");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ended = sqlx::query("SELECT 1").execute(&mut *stalled).await.expect_err("the stalled session was ended");
    assert!(ordermesh_db::db_unavailable(&ended), "{ended:?}");
    drop(stalled);
    sqlx::query("UPDATE stock SET n = n - 1 WHERE id = 1").execute(&pool).await.expect("the row is free again");

    pool.close().await;
    testdb::drop_database(&name).await;
}

/// Ends the operator's transaction, handing its session back.
async fn operator_free(operator: &mut sqlx::PgConnection) -> &mut sqlx::PgConnection {
    sqlx::raw_sql("ROLLBACK").execute(&mut *operator).await.expect("rollback");
    operator
}

#[tokio::test]
async fn migrations_run_without_the_statement_bounds() {
    let (url, name) = testdb::unique_database("om_test_migrate_bounds_");
    let dir = std::env::temp_dir().join(format!("om_migrations_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A migration longer than the services' statement bound (an index built on a big table).
    std::fs::write(dir.join("1_slow.sql"), "SELECT pg_sleep(1); CREATE TABLE built (x int);").unwrap();
    let migrator = sqlx::migrate::Migrator::new(dir.as_path()).await.expect("migrations");
    let settings = DatabaseSettings { statement_timeout: Duration::from_millis(200), ..DatabaseSettings::new(url) };
    let pool = ordermesh_db::connect_and_migrate(&settings, &migrator).await.expect("migrated");
    let built: bool = sqlx::query_scalar("SELECT to_regclass('built') IS NOT NULL").fetch_one(&pool).await.unwrap();
    assert!(built);
    // The service's own sessions stay bounded.
    let long = sqlx::query("SELECT pg_sleep(1)").execute(&pool).await.expect_err("bounded");
    assert!(ordermesh_db::db_unavailable(&long), "{long:?}");
    pool.close().await;
    std::fs::remove_dir_all(&dir).ok();
    testdb::drop_database(&name).await;
}

/// Waits until the pool's one connection is back and idle (its release crosses the slow link).
async fn idle_in_pool(pool: &sqlx::PgPool) {
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while pool.num_idle() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the connection came back to the pool within 5 s");
}

/// Whether the pool's one connection is inside a transaction: `SAVEPOINT` is refused outside one.
async fn left_in_a_transaction(pool: &sqlx::PgPool) -> bool {
    let mut conn = pool.acquire().await.expect("the connection");
    let inside = sqlx::query("SAVEPOINT probe").execute(&mut *conn).await.is_ok();
    if inside {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    inside
}

/// A TCP proxy to the test's PostgreSQL that holds every answer of the server for `delay`: a slow link, so a
/// caller's deadline can fall between a statement sent and its answer read. Returns its port.
async fn slow_link(delay: Duration) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server: std::net::SocketAddr = {
        let url = testdb::server_url();
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("the test server's URL");
        let host = if options.get_host().starts_with('/') { "127.0.0.1" } else { options.get_host() };
        format!("{host}:{}", options.get_port()).parse().expect("an address")
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(upstream) = tokio::net::TcpStream::connect(server).await else { continue };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = upstream.into_split();
            tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = server_read.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_begin_cut_by_a_deadline_never_hands_back_a_connection_inside_a_transaction() {
    let (url, name) = testdb::unique_database("om_test_pool_");
    let direct = connect(&DatabaseSettings::new(url.clone())).await.expect("the database exists");
    direct.close().await;
    // The same database through a link whose answers take 150 ms.
    let port = slow_link(Duration::from_millis(150)).await;
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let options = options.host("127.0.0.1").port(port);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .expect("pool");
    assert!(!left_in_a_transaction(&pool).await, "a fresh connection is idle");

    // A caller's deadline (a gRPC client's, a handler's bound) falling between BEGIN sent and its answer
    // read: the connection must come back to the pool idle, or the next user's one-statement writes would run
    // inside the open transaction, be answered as done, and vanish with its eventual rollback. sqlx 0.9.0 left
    // it open (launchbadge/sqlx#4393; the likely cause of two nemesis findings: a confirmed order's reservation
    // still held, an acknowledged add gone); 0.9.1 rolls it back. Checked without the ping before acquire, as the services'
    // pools run; this holds it so across upgrades.
    for _ in 0..3 {
        // The connection must be idle in the pool before the cut, or the deadline falls in `acquire` (the
        // last use's ping still crossing the slow link) and BEGIN is never sent: the window would go untested.
        idle_in_pool(&pool).await;
        let cut = tokio::time::timeout(Duration::from_millis(50), pool.begin()).await;
        assert!(cut.is_err(), "BEGIN answered within 50 ms over a 150 ms link");
        assert!(!left_in_a_transaction(&pool).await, "a cut begin left the connection inside a transaction");
    }
    let mut tx = pool.begin().await.expect("a transaction");
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert!(!left_in_a_transaction(&pool).await);
    pool.close().await;
    testdb::drop_database(&name).await;
}

#[tokio::test]
async fn a_violation_is_recognised_by_its_constraint_s_name_and_no_other() {
    let (url, name) = testdb::unique_database("om_test_pool_");
    let pool = connect(&DatabaseSettings::new(url)).await.expect("the database");
    sqlx::raw_sql(
        "CREATE TABLE t (id INT PRIMARY KEY, n INT CONSTRAINT t_n_positive CHECK (n > 0)); INSERT INTO t VALUES (1, 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let twice = sqlx::query("INSERT INTO t VALUES (1, 1)").execute(&pool).await.expect_err("a taken key");
    assert!(ordermesh_db::violates(&twice, &["t_pkey"]));
    assert!(!ordermesh_db::violates(&twice, &["t_n_positive", "other_pkey"]), "another constraint is not it");
    let negative = sqlx::query("INSERT INTO t VALUES (2, -1)").execute(&pool).await.expect_err("a refused CHECK");
    assert!(ordermesh_db::violates(&negative, &["t_n_positive"]));
    let missing = sqlx::query("INSERT INTO nowhere VALUES (1)").execute(&pool).await.expect_err("no table");
    assert!(!ordermesh_db::violates(&missing, &["t_pkey"]), "an error of no constraint is none");
    pool.close().await;
    testdb::drop_database(&name).await;
}
