//! The fault suite: the six services as real child processes of their own binaries, on a private
//! PostgreSQL cluster and a private RabbitMQ node, under a steady stream of checkouts (some rejected
//! for stock, some declined for money). Each scenario injects one fault; after each, every accepted
//! order must be final within its bound, the dead-letter queues must hold exactly the poison that was
//! sent, and `ordermesh audit` (the command operators run) must find nothing. The table it prints (and
//! writes to `target/fault-suite.md`) is the one in docs/testing.md. The harness is in `harness`, each
//! scenario of the single-node run in `scenarios/`, the table in `table`.

mod cluster;
mod harness;
mod load;
mod pg_failover;
mod replicas;
mod scenarios;
mod table;

use std::time::{Duration, Instant};

pub(crate) use harness::{Disruption, ONE_AT_A_TIME, SERVICES, Suite};

/// How long one of the suite's tests may run before the watchdog ends the binary: several times what each
/// takes (the longest, every fault on one node, about five minutes), so only a hang reaches it.
const SCENARIO_LIMIT: Duration = Duration::from_secs(1200);

/// Every accepted order must be final this soon after the fault is over (the service is back).
const SETTLE_BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_keeps_its_promises_through_every_fault() {
    ordermesh_testkit::watchdog::arm(crate::SCENARIO_LIMIT);
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut suite = Suite::start(false, 1).await;
    load::seed(&suite.inventory_url).await;
    let suite_started = Instant::now();

    // Warm-up: the steady stream alone.
    let load = suite.stream("baseline").await;
    load.wait_for_orders(20).await;
    let accepted = load.stop().await;
    let outcome = suite.check(&accepted, Instant::now(), SETTLE_BOUND).await;
    suite.record("none (baseline)", "-", "-".into(), "every accepted order final; audit clean", outcome);

    for (name, fault) in [
        ("checkout-manager", "kill -9 checkout-manager"),
        ("payment-gateway", "kill -9 payment-gateway"),
        ("cart-manager", "kill -9 cart-manager"),
        ("inventory-manager", "kill -9 inventory-manager"),
        ("api-gateway", "kill -9 api-gateway"),
        ("checkout-manager", "kill -9 checkout-manager (again, later in the stream)"),
    ] {
        suite.process_scenario(name, fault, Disruption::Kill).await;
    }
    for (name, fault) in
        [("checkout-manager", "SIGSTOP checkout-manager (a stall)"), ("cart-manager", "SIGSTOP cart-manager (a stall)")]
    {
        suite.process_scenario(name, fault, Disruption::Stall).await;
    }

    // The rest, one module each in scenarios/.
    scenarios::broker_restart::run(&mut suite).await;
    scenarios::database_restart::run(&mut suite).await;
    scenarios::inventory_beyond_budget::run(&mut suite).await;
    scenarios::poison::run(&mut suite).await;
    scenarios::duplicates::run(&mut suite).await;
    scenarios::reservation_expiry::run(&mut suite).await;
    scenarios::flaky_payment::run(&mut suite).await;
    scenarios::notifier_mid_send::run(&mut suite).await;
    scenarios::shutdown::run(&mut suite).await;

    suite.finish(suite_started, "fault-suite.md").await;
}
