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
