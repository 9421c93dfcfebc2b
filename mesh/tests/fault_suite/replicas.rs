//! Two instances of every service, inventory included, under the stream of shoppers (who use both gateways and
//! move to the other when one does not answer): one instance of each service killed with SIGKILL in turn,
//! each left down for 2 s while its twin carries on. Checkouts must keep being accepted while each is down,
//! and afterwards nothing is lost, doubled or oversold, every order is final and no dead letter appears.

use std::time::{Duration, Instant};

use crate::{ONE_AT_A_TIME, SERVICES, SETTLE_BOUND, Suite, load};

/// While one instance of a service is down, its twin must let a checkout through this soon.
const TWIN_TAKES_OVER: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_of_every_service_one_of_each_killed_in_turn_loses_nothing() {
    ordermesh_testkit::watchdog::arm(crate::SCENARIO_LIMIT);
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut suite = Suite::start(false, 2).await;
    load::seed(&suite.inventory_url).await;
    let started = Instant::now();

    let load = suite.stream("twins").await;
    load.wait_for_orders(15).await;
    let in_flight = suite.in_flight().await;
    let mut taken_over = Vec::new();
    for name in SERVICES {
        suite.service(name).kill9().await;
        let killed = Instant::now();
        let first = load.next_checkout_after(killed, Duration::from_secs(10)).await;
        let down_for = Duration::from_secs(2).saturating_sub(killed.elapsed());
        tokio::time::sleep(down_for).await;
        suite.service(name).start();
        match first {
            Some(t) if t <= TWIN_TAKES_OVER => taken_over.push(format!("{name} {:.2} s", t.as_secs_f64())),
            other => {
                suite.failures.push(format!("no checkout within {TWIN_TAKES_OVER:?} of killing one {name}: {other:?}"));
                taken_over.push(format!("{name} none"));
            }
        }
    }
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted = load.stop().await;
    let (result, recovery) = suite.check(&accepted, back, SETTLE_BOUND).await;
    suite.record(
        "two of every service; one of each killed in turn",
        "SIGKILL of one instance of each service in turn under load, each restarted 2 s later; shoppers use both gateways",
        in_flight,
        "a checkout accepted within 5 s of each kill; every order final within 10 s of the last restart; audit clean; no DLQ",
        (result, format!("first checkout after each kill: {}; all final {recovery} after the last restart", taken_over.join(", "))),
    );

    suite.finish(started, "fault-suite-replicas.md").await;
}
