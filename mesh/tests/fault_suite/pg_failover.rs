//! PostgreSQL failover under the stream of shoppers: a private primary with a synchronous standby
//! (`pg_basebackup`), every service and the suite reaching the primary through one stable address (a forwarder
//! the suite repoints, as a failover manager moves its `-rw` address). The primary is killed with SIGKILL, the
//! standby promoted (its own synchronous requirement dropped) and the address moved. Every checkout answered
//! 202 before or after must exist and be final within 15 s of the promotion; the audit finds nothing.

use std::time::{Duration, Instant};

use crate::{ONE_AT_A_TIME, Suite, load};

/// Every accepted order must be final this soon after the promotion.
const FAILOVER_SETTLE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_standby_takes_over_from_a_killed_primary_and_nothing_acknowledged_is_lost() {
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
    let accepted = load.stop().await;
    let (result, recovery) = suite.check(&accepted, promoted, FAILOVER_SETTLE).await;
    let recovery = match first {
        Some(t) => {
            format!("first checkout {:.2} s after the promotion; all final {recovery} after it", t.as_secs_f64())
        }
        None => {
            suite.failures.push("no checkout within 20 s of the promotion".into());
            format!("no checkout after the promotion; {recovery}")
        }
    };
    suite.record(
        "PostgreSQL primary killed, synchronous standby promoted",
        "SIGKILL of the primary under load; pg_ctl promote of the standby, its synchronous requirement reset, the stable address moved",
        in_flight,
        "every checkout answered 202 exists (synchronous commit) and is final within 15 s of the promotion; audit clean; no DLQ",
        (result, recovery),
    );

    suite.finish(started, "fault-suite-failover.md").await;
}
