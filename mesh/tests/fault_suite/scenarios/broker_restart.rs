//! RabbitMQ stopped and started: persistent messages survive, every service reconnects.

use std::time::{Duration, Instant};

use crate::{SETTLE_BOUND, harness::Suite};

/// Runs the scenario on `suite` and records its row.
pub(crate) async fn run(suite: &mut Suite) {
    let load = suite.stream("rabbit").await;
    load.wait_for_orders(15).await;
    let in_flight = suite.in_flight().await;
    suite.rabbit.single().stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    suite.rabbit.single().start().await;
    let back = Instant::now();
    let first = load.next_checkout_after(back, Duration::from_secs(20)).await;
    let accepted = load.stop().await;
    let (result, recovery) = suite.check(&accepted, back, SETTLE_BOUND).await;
    let recovery = match first {
        Some(t) if result != "FAIL" => format!(
            "first checkout {:.2} s after the broker accepted connections; all final {recovery} after it",
            t.as_secs_f64()
        ),
        Some(_) => recovery,
        None => {
            suite.failures.push("no checkout after the broker restart".into());
            "no checkout after the broker came back".into()
        }
    };
    if let Some(t) = first
        && t > Duration::from_secs(1)
    {
        suite.failures.push(format!("first checkout {t:?} after the broker returned (bound 1 s)"));
    }
    suite.record(
        "RabbitMQ stopped and started",
        "rabbitmqctl stop of the private node, started again 2 s later",
        in_flight,
        "first checkout within 1 s of the broker returning; every order final; audit clean",
        (result, recovery),
    );
}
