//! The shipped load generator as a smoke check: a few seconds at a low rate in each scenario, against
//! the real mesh. It works, every order ends, and nothing is oversold. (Not a timed test: rates and
//! latencies are the benchmark's business, not this test's.)

use std::time::Duration;

use ordermesh_bench::{Mode, Options, Scenario};

use crate::helpers::{Options as MeshOptions, spawn_mesh_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_runs_each_scenario_and_nothing_is_oversold() {
    // Against a gateway that asks for keys, as a production deployment does: the generator sends its key.
    let mesh = spawn_mesh_with(MeshOptions { gateway_auth: true, ..Default::default() }).await;
    let (pool, _) = mesh.gateway_db.as_ref().unwrap();
    let channel = ordermesh_messages::Channel::parse("web").unwrap();
    let (_, key) =
        api_gateway::keys::create(pool, api_gateway::keys::Role::Shopper, &channel, None, "bench").await.unwrap();
    for scenario in [Scenario::Spread, Scenario::Hot, Scenario::Mixed] {
        let options = Options {
            gateway: mesh.gateways[0].clone(),
            inventory: mesh.inventory_url.clone(),
            scenario,
            mode: Mode::Open { rate: 10.0 },
            duration: Duration::from_secs(2),
            hot_stock: 8,
            quiet: true,
            api_key: Some(ordermesh_bench::options::ApiKey(key.expose().to_owned())),
            ..Options::default()
        };
        let report = ordermesh_bench::run(options).await.expect("the generator runs");
        let summary = report.render();
        assert!(report.errors.is_empty(), "{scenario:?}: {summary}");
        assert_eq!(report.offered, 20, "{scenario:?}: {summary}");
        assert_eq!(report.accepted, report.completed, "every accepted order ended: {summary}");
        let stock = report.stock.clone().expect("stock checked");
        assert!(stock.balanced && stock.oversold == 0, "{scenario:?}: {summary}");
        let confirmed = report.by_status.get("CONFIRMED").copied().unwrap_or(0);
        match scenario {
            Scenario::Hot => assert_eq!(confirmed, 8, "exactly as many confirmed as units: {summary}"),
            Scenario::Mixed => assert!(report.by_status.contains_key("PAYMENT_DECLINED"), "{summary}"),
            Scenario::Spread => assert_eq!(confirmed, 20, "{summary}"),
        }
        let svg = report.svg();
        assert!(svg.starts_with("<svg") && svg.contains("checkout → final"), "a picture for people");
    }
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_measures_what_rabbitmq_and_postgresql_alone_do() {
    let server = ordermesh_testkit::testdb::server_url();
    let work: ordermesh_bench::floor::CheckoutWork = "2,1,3".parse().expect("a checkout's work");
    let floor =
        ordermesh_bench::floor::measure(ordermesh_bus::DEFAULT_AMQP_URL, &server, 4, Duration::from_millis(500), work)
            .await
            .expect("the floor runs");
    assert!(floor.rabbitmq_round_trips_per_s > 0.0, "{floor:?}");
    assert!(floor.postgres_hot_updates_per_s > 0.0 && floor.postgres_spread_updates_per_s > 0.0, "{floor:?}");
    // Simulated checkouts finished: each of their round trips came back and each statement committed.
    assert!(floor.checkouts_per_s > 0.0 && floor.checkout_work == work, "{floor:?}");
    // Each part alone ran too, and the batched database part counted its orders.
    let broker = floor.broker_checkouts_per_s.expect("the broker part alone");
    let database = floor.database_checkouts_per_s.expect("the database part alone");
    let batched = floor.database_batched_checkouts_per_s.expect("the batched database part");
    assert!(broker > 0.0 && database > 0.0 && batched > 0.0, "{floor:?}");
    let ceiling = floor.ceiling();
    assert!(ceiling <= floor.checkouts_per_s && ceiling <= broker && ceiling <= database, "{floor:?}");
    let text = floor.render();
    assert!(
        text.contains("round trips/s") && text.contains("(2 round trips, 1 unrouted publishes, 3 statements each)")
    );
    assert!(text.contains("its broker part alone") && text.contains("8 orders per statement"), "{text}");
}
