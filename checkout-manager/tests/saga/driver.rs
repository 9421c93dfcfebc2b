//! The driver: leases that pass to a live instance, and a step bounded in time.

use super::*;

#[tokio::test]
async fn a_dead_drivers_order_is_taken_over_once_its_lease_runs_out_and_a_live_driver_keeps_its_own() {
    let f = fixture(settings()).await;
    let lease = f.saga.settings.lease;
    let id = f.place().await;

    // A driver claims the order and dies (its lease is never renewed).
    let claimed = orders::claim_due(&f.pool, 10, lease).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(orders::claim_due(&f.pool, 10, lease).await.unwrap().is_empty(), "nobody else takes a leased order");
    let started = tokio::time::Instant::now();
    let taken = loop {
        let due = orders::claim_due(&f.pool, 10, lease).await.unwrap();
        if !due.is_empty() {
            break due;
        }
        assert!(started.elapsed() < lease * 3, "not taken over within three leases");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(taken[0].order_id.as_str(), id);

    // A live driver renews its lease: however long its step takes, nobody else takes the order.
    let held = vec![(taken[0].order_id.to_string(), taken[0].version)];
    let until = tokio::time::Instant::now() + lease * 3;
    while tokio::time::Instant::now() < until {
        assert_eq!(orders::renew_leases(&f.pool, &held, lease).await.unwrap(), 1);
        assert!(orders::claim_due(&f.pool, 10, lease).await.unwrap().is_empty(), "a renewed lease was taken over");
        tokio::time::sleep(lease / 3).await;
    }
    f.done().await;
}

#[tokio::test]
async fn a_step_that_hangs_is_stopped_at_its_bound_and_its_lease_left_to_run_out() {
    let step_timeout = Duration::from_millis(400);
    let f = fixture(SagaSettings { step_timeout, ..settings() }).await;
    let lease = f.saga.settings.lease;
    let id = f.place().await;
    let claimed = orders::claim_due(&f.pool, 10, lease).await.unwrap();
    assert_eq!(claimed.len(), 1);

    // Inventory takes the reservation and never answers: the step is stopped at its bound, not awaited for ever.
    f.stock.hang.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let advanced = tokio::time::timeout(Duration::from_secs(10), f.saga.advance(claimed[0].clone()))
        .await
        .expect("the step is bounded");
    assert!(matches!(advanced, Err(checkout_manager::error::CheckoutError::StepTimedOut { .. })), "{advanced:?}");
    assert!(started.elapsed() < step_timeout * 3, "stopped after {:?}", started.elapsed());
    assert!(f.saga.leases.snapshot(step_timeout).is_empty(), "a stopped step holds no lease");

    // A step still in hand past its bound (stuck where it cannot be stopped) is no longer renewed...
    f.saga.leases.hold(&id, claimed[0].version);
    assert_eq!(f.saga.leases.snapshot(step_timeout).len(), 1, "a step within its bound is renewed");
    tokio::time::sleep(step_timeout).await;
    assert!(f.saga.leases.snapshot(step_timeout).is_empty(), "a step past its bound is not renewed");

    // ...so its lease runs out and a driver takes the order up again; with inventory back, it goes on.
    f.stock.hang.store(false, std::sync::atomic::Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + lease * 3;
    let taken = loop {
        let due = orders::claim_due(&f.pool, 10, lease).await.unwrap();
        if !due.is_empty() {
            break due;
        }
        assert!(tokio::time::Instant::now() < deadline, "the order was never taken up again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(taken[0].order_id.as_str(), id);
    f.saga.advance(taken[0].clone()).await.unwrap();
    assert_eq!(f.status(&id).await, "PAYMENT_PENDING");
    f.done().await;
}
