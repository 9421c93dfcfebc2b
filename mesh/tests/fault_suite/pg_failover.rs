//! PostgreSQL failover under the stream of shoppers: a private primary with a synchronous standby
//! (`pg_basebackup`), every service and the suite reaching the primary through one stable address (a forwarder
//! the suite repoints, as a failover manager moves its `-rw` address). The primary is killed with SIGKILL, the
//! standby promoted (its own synchronous requirement dropped) and the address moved. Every add answered 200
//! and every checkout answered 202, before or after, must exist, every order be final within 15 s of the
//! promotion, and the audit find nothing.

use std::time::{Duration, Instant};

use crate::{ONE_AT_A_TIME, Suite, load};

/// Every accepted order must be final this soon after the promotion.
const FAILOVER_SETTLE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_standby_takes_over_from_a_killed_primary_and_nothing_acknowledged_is_lost() {
    ordermesh_testkit::watchdog::arm(crate::SCENARIO_LIMIT);
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut suite = Suite::start_with(false, 1, true).await;
    load::seed(&suite.inventory_url).await;
    let started = Instant::now();

    let load = suite.stream("failover").await;
    load.wait_for_orders(15).await;
    let in_flight = suite.in_flight().await;
    // Commits wait for the standby: what was acknowledged is on both servers.
    let replication = suite.pg.sql("SELECT string_agg(sync_state, ',') FROM pg_stat_replication");
    assert_eq!(replication, "sync", "the standby must be synchronous before the primary dies");
    suite.pg.kill9();
    let (standby, forwarder) = suite.failover.as_ref().expect("the suite has a standby");
    standby.promote();
    forwarder.repoint(standby.port);
    let promoted = Instant::now();
    let first = load.next_checkout_after(promoted, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let adds = load.acknowledged_adds();
    let accepted = load.stop().await;
    let (mut result, recovery) = suite.check(&accepted, promoted, FAILOVER_SETTLE).await;
    // Every add answered 200 is recorded under its Idempotency-Key (cart-manager keeps `key:<key>`).
    let keys: Vec<String> = adds.iter().map(|client| format!("key:add-{client}")).collect();
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM cart_requests WHERE request_key = ANY($1)")
        .bind(&keys)
        .fetch_one(&suite.cart_db)
        .await
        .expect("cart's requests readable after the failover");
    if recorded != keys.len() as i64 {
        result = "FAIL".into();
        suite.failures.push(format!(
            "{} of {} acknowledged adds are gone after the failover",
            keys.len() as i64 - recorded,
            keys.len()
        ));
    }
    let kept = format!("{recorded} of {} acknowledged adds kept", keys.len());
    let recovery = match first {
        Some(t) => {
            format!(
                "{kept}; first checkout {:.2} s after the promotion; all final {recovery} after it",
                t.as_secs_f64()
            )
        }
        None => {
            suite.failures.push("no checkout within 20 s of the promotion".into());
            format!("{kept}; no checkout after the promotion; {recovery}")
        }
    };
    suite.record(
        "PostgreSQL primary killed, synchronous standby promoted",
        "SIGKILL of the primary under load; pg_ctl promote of the standby, its synchronous requirement reset, the stable address moved",
        in_flight,
        "every add answered 200 and every checkout answered 202 exists (synchronous commit); all final within 15 s of the promotion; audit clean; no DLQ",
        (result, recovery),
    );

    suite.finish(started, "fault-suite-failover.md").await;
}
