//! Stopping is bounded: work that outlived the shutdown grace (a database connection still in use) does not
//! keep checkout-manager from exiting.

use std::time::{Duration, Instant};

use checkout_manager::{config::Config, startup::Application};
use ordermesh_config::DatabaseSettings;
use ordermesh_testkit::testdb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_connection_still_in_use_at_exit_does_not_hold_up_the_stop() {
    let (url, database) = testdb::unique_database("om_test_shutdown_");
    let mut config = Config {
        database: DatabaseSettings::new(url),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        shutdown_grace: Duration::from_millis(300),
        ..Config::default()
    };
    // No broker: the service keeps trying to connect in the background, and declares nothing anywhere.
    config.shared.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    let app = Application::build(config).await.expect("checkout-manager builds");
    // Work that outlives the grace holds a connection until the end.
    let held = app.pool().acquire().await.expect("a connection");

    let started = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(30), app.run_until_stopped(async {})).await;
    let took = started.elapsed();
    assert!(stopped.is_ok(), "the stop waited on the connection in use");
    assert!(took < Duration::from_millis(300) + ordermesh_db::CLOSE_BOUND + Duration::from_secs(3), "{took:?}");

    drop(held);
    testdb::drop_database(&database).await;
}
