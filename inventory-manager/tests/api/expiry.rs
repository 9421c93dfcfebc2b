//! Reservations that run out of time are released, and can no longer be committed.

use std::time::Duration;

use ordermesh_proto::inventory::v1::ReservationStatus;
use tonic::Code;

use crate::helpers::{expect_code, reserve_request, spawn_inventory_with};

#[tokio::test]
async fn the_sweeper_releases_expired_reservations() {
    let mut inv = spawn_inventory_with(|c| c.sweep_interval = Duration::from_millis(100)).await;
    inv.product("a", 5).await;
    inv.client.reserve(reserve_request("short", &[("a", 4)], 1)).await.unwrap();
    inv.client.reserve(reserve_request("long", &[("a", 1)], 600)).await.unwrap();
    assert_eq!(inv.stock("a").await.reserved, 5);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = inv.reservation("short").await.unwrap();
        if r.status() == ReservationStatus::Expired {
            assert!(r.expired_at.is_some());
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not expired within 10 s: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = inv.stock("a").await;
    assert_eq!((a.on_hand, a.reserved, a.available), (5, 1, 4), "only the expired hold was released");
    assert_eq!(inv.reservation("long").await.unwrap().status(), ReservationStatus::Held);

    let status = expect_code(inv.commit("short").await, Code::FailedPrecondition);
    assert!(status.message().contains("expired"), "{}", status.message());
    // Rolling back an expired hold is a harmless no-op.
    assert_eq!(inv.roll_back("short").await.unwrap().status(), ReservationStatus::Expired);
    assert_eq!(inv.stock("a").await.reserved, 1);
    inv.stop().await;
}

#[tokio::test]
async fn commit_after_the_deadline_fails_even_before_the_sweeper_runs() {
    // The sweeper is effectively off: the commit path must notice the deadline by itself.
    let mut inv = spawn_inventory_with(|c| c.sweep_interval = Duration::from_secs(3600)).await;
    inv.product("a", 5).await;
    inv.client.reserve(reserve_request("late", &[("a", 2)], 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;

    expect_code(inv.commit("late").await, Code::FailedPrecondition);
    let r = inv.reservation("late").await.unwrap();
    assert_eq!(r.status(), ReservationStatus::Expired);
    let a = inv.stock("a").await;
    assert_eq!((a.on_hand, a.reserved), (5, 0), "the hold was released, nothing sold");
    inv.stop().await;
}
