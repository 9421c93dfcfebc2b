//! Reserve, CommitReservation, RollBackReservation: success paths, error codes and idempotency.

use futures::future::join_all;
use ordermesh_proto::inventory::v1::{self as pb, ReservationStatus};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{expect_code, reserve_request, spawn_inventory};

#[tokio::test]
async fn reserve_holds_and_commit_sells() {
    let mut inv = spawn_inventory().await;
    inv.product("a", 10).await;
    inv.product("b", 5).await;

    let held = inv.reserve("order-1", &[("b", 2), ("a", 3)]).await.unwrap();
    assert_eq!(held.reservation_id, "order-1");
    assert_eq!(held.status(), ReservationStatus::Held);
    let expires = held.expires_at.unwrap().seconds - held.created_at.unwrap().seconds;
    assert!((899..=901).contains(&expires), "default TTL is 15 minutes, got {expires}s");
    let lines: Vec<_> = held.lines.iter().map(|l| (l.product_id.as_str(), l.quantity)).collect();
    assert_eq!(lines, [("a", 3), ("b", 2)], "lines come back in product order");

    let a = inv.stock("a").await;
    assert_eq!((a.on_hand, a.reserved, a.available), (10, 3, 7));

    let committed = inv.commit("order-1").await.unwrap();
    assert_eq!(committed.status(), ReservationStatus::Committed);
    assert!(committed.committed_at.is_some());
    let a = inv.stock("a").await;
    assert_eq!((a.on_hand, a.reserved, a.available), (7, 0, 7));
    let b = inv.stock("b").await;
    assert_eq!((b.on_hand, b.reserved, b.available), (3, 0, 3));
    inv.stop().await;
}

#[tokio::test]
async fn roll_back_releases_the_hold_and_keeps_the_record() {
    let mut inv = spawn_inventory().await;
    inv.product("a", 4).await;
    inv.reserve("r", &[("a", 4)]).await.unwrap();
    assert_eq!(inv.stock("a").await.available, 0);

    let rolled = inv.roll_back("r").await.unwrap();
    assert_eq!(rolled.status(), ReservationStatus::RolledBack);
    assert!(rolled.rolled_back_at.is_some() && rolled.committed_at.is_none());
    let a = inv.stock("a").await;
    assert_eq!((a.on_hand, a.reserved, a.available), (4, 0, 4));

    // Nothing is deleted: the reservation is still there for audit.
    let stored = inv.reservation("r").await.unwrap();
    assert_eq!(stored.status(), ReservationStatus::RolledBack);
    assert_eq!(stored.lines.len(), 1);
    inv.stop().await;
}

#[tokio::test]
async fn insufficient_stock_holds_nothing_and_names_the_product() {
    let mut inv = spawn_inventory().await;
    inv.product("a", 10).await;
    inv.product("b", 1).await;

    let status = expect_code(inv.reserve("r", &[("a", 5), ("b", 2)]).await, Code::FailedPrecondition);
    assert!(status.message().contains('b') && status.message().contains("available 1"), "{}", status.message());
    let info = status.get_details_error_info().expect("ErrorInfo details");
    assert_eq!(info.reason, "INSUFFICIENT_STOCK");
    assert_eq!(info.metadata["product_id"], "b");
    assert_eq!(info.metadata["available"], "1");
    assert_eq!(info.metadata["requested"], "2");
    let failure = status.get_details_precondition_failure().expect("PreconditionFailure details");
    assert_eq!(failure.violations[0].subject, "products/b");

    // All or nothing: line "a" was not held either, and no reservation was recorded.
    assert_eq!(inv.stock("a").await.reserved, 0);
    assert_eq!(inv.stock("b").await.reserved, 0);
    expect_code(inv.reservation("r").await, Code::NotFound);

    // The id is free again once stock allows it.
    inv.reserve("r", &[("a", 5), ("b", 1)]).await.unwrap();
    inv.stop().await;
}

#[tokio::test]
async fn unknown_product_or_reservation_is_not_found() {
    let mut inv = spawn_inventory().await;
    inv.product("a", 10).await;
    let status = expect_code(inv.reserve("r", &[("a", 1), ("ghost", 1)]).await, Code::NotFound);
    assert!(status.message().contains("ghost"));
    assert_eq!(inv.stock("a").await.reserved, 0);

    expect_code(inv.commit("nope").await, Code::NotFound);
    expect_code(inv.roll_back("nope").await, Code::NotFound);
    expect_code(inv.reservation("nope").await, Code::NotFound);
    inv.stop().await;
}

#[tokio::test]
async fn malformed_reservations_are_invalid_argument() {
    let mut inv = spawn_inventory().await;
    inv.product("a", 10).await;
    let long = "x".repeat(101);
    let cases = [
        (reserve_request("", &[("a", 1)], 0), "reservation_id"),
        (reserve_request(&long, &[("a", 1)], 0), "reservation_id"),
        (reserve_request("r", &[], 0), "lines"),
        (reserve_request("r", &[("a", 0)], 0), "quantity"),
        (reserve_request("r", &[("a", -3)], 0), "quantity"),
        (reserve_request("r", &[("a", 1_000_001)], 0), "quantity"),
        (reserve_request("r", &[("a", i64::MAX)], 0), "quantity"),
        (reserve_request("r", &[("", 1)], 0), "product_id"),
        (reserve_request("r", &[("a", 1), ("a", 2)], 0), "lines"),
        (reserve_request("r", &[("a", 1)], -1), "ttl_seconds"),
        (reserve_request("r", &[("a", 1)], 10 * 24 * 3600), "ttl_seconds"),
    ];
    for (request, field) in cases {
        let status = expect_code(inv.client.reserve(request.clone()).await, Code::InvalidArgument);
        let violations = status.get_details_bad_request().expect("bad request details").field_violations;
        assert_eq!(violations[0].field, field, "{request:?} -> {status:?}");
    }
    let too_many: Vec<(String, i64)> = (0..101).map(|i| (format!("p{i}"), 1)).collect();
    let lines: Vec<(&str, i64)> = too_many.iter().map(|(p, q)| (p.as_str(), *q)).collect();
    expect_code(inv.reserve("r", &lines).await, Code::InvalidArgument);
    for id in ["", &long] {
        expect_code(inv.commit(id).await, Code::InvalidArgument);
        expect_code(inv.roll_back(id).await, Code::InvalidArgument);
    }
    assert_eq!(inv.stock("a").await.reserved, 0);
    inv.stop().await;
}

#[tokio::test]
async fn reserve_is_idempotent_on_its_id() {
    let mut inv = spawn_inventory().await;
    inv.product("a", 10).await;
    inv.product("b", 10).await;
    let first = inv.reserve("r", &[("a", 2), ("b", 1)]).await.unwrap();
    // The same lines in another order are the same reservation.
    let again = inv.reserve("r", &[("b", 1), ("a", 2)]).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(inv.stock("a").await.reserved, 2, "held once");

    let status = expect_code(inv.reserve("r", &[("a", 3), ("b", 1)]).await, Code::AlreadyExists);
    assert!(status.message().contains('r'));
    expect_code(inv.reserve("r", &[("a", 2)]).await, Code::AlreadyExists);
    assert_eq!(inv.stock("a").await.reserved, 2);

    // After commit, a retried Reserve still answers with the (now committed) reservation, and holds nothing new.
    inv.commit("r").await.unwrap();
    let replay = inv.reserve("r", &[("a", 2), ("b", 1)]).await.unwrap();
    assert_eq!(replay.status(), ReservationStatus::Committed);
    let a = inv.stock("a").await;
    assert_eq!((a.on_hand, a.reserved), (8, 0));

    // The same for a reservation of one line (the one-statement path).
    let single = inv.reserve("s", &[("a", 4)]).await.unwrap();
    assert_eq!(inv.reserve("s", &[("a", 4)]).await.unwrap(), single);
    expect_code(inv.reserve("s", &[("a", 5)]).await, Code::AlreadyExists);
    expect_code(inv.reserve("s", &[("b", 4)]).await, Code::AlreadyExists);
    let a = inv.stock("a").await;
    assert_eq!((a.on_hand, a.reserved), (8, 4), "held once");
    inv.roll_back("s").await.unwrap();
    let again = inv.reserve("s", &[("a", 4)]).await.unwrap();
    assert_eq!(again.status(), ReservationStatus::RolledBack, "a settled id is not held again");
    assert_eq!(inv.stock("a").await.reserved, 0);
    inv.stop().await;
}

#[tokio::test]
async fn commit_and_roll_back_are_idempotent_and_exclusive() {
    let mut inv = spawn_inventory().await;
    inv.product("a", 10).await;

    inv.reserve("c", &[("a", 3)]).await.unwrap();
    let first = inv.commit("c").await.unwrap();
    let second = inv.commit("c").await.unwrap();
    assert_eq!(first, second);
    assert_eq!(inv.stock("a").await.on_hand, 7, "sold once");
    let status = expect_code(inv.roll_back("c").await, Code::FailedPrecondition);
    assert!(status.message().contains("committed"));

    inv.reserve("r", &[("a", 3)]).await.unwrap();
    let first = inv.roll_back("r").await.unwrap();
    let second = inv.roll_back("r").await.unwrap();
    assert_eq!(first, second);
    let status = expect_code(inv.commit("r").await, Code::FailedPrecondition);
    assert!(status.message().contains("rolled_back"));
    let a = inv.stock("a").await;
    assert_eq!((a.on_hand, a.reserved, a.available), (7, 0, 7));
    inv.stop().await;
}

#[tokio::test]
async fn racing_duplicate_calls_act_once() {
    let mut inv = spawn_inventory().await;
    inv.product("a", 100).await;

    let reserves = (0..20).map(|_| {
        let mut client = inv.client.clone();
        async move { client.reserve(reserve_request("dup", &[("a", 7)], 0)).await }
    });
    let results = join_all(reserves).await;
    let reservations: Vec<pb::Reservation> = results.into_iter().map(|r| r.unwrap().into_inner()).collect();
    assert!(reservations.windows(2).all(|w| w[0].reservation_id == w[1].reservation_id));
    assert_eq!(inv.stock("a").await.reserved, 7, "twenty racing duplicates hold once");

    let commits = (0..20).map(|_| {
        let mut client = inv.client.clone();
        async move { client.commit_reservation(pb::CommitReservationRequest { reservation_id: "dup".into() }).await }
    });
    for result in join_all(commits).await {
        assert_eq!(result.unwrap().into_inner().status(), ReservationStatus::Committed);
    }
    let a = inv.stock("a").await;
    assert_eq!((a.on_hand, a.reserved), (93, 0), "twenty racing commits sell once");

    // Commit racing roll-back: exactly one wins, the other is told why, and stock matches the winner.
    inv.reserve("race", &[("a", 5)]).await.unwrap();
    let (mut c1, mut c2) = (inv.client.clone(), inv.client.clone());
    let (commit, roll_back) = tokio::join!(
        c1.commit_reservation(pb::CommitReservationRequest { reservation_id: "race".into() }),
        c2.roll_back_reservation(pb::RollBackReservationRequest { reservation_id: "race".into() }),
    );
    let a = inv.stock("a").await;
    match (commit, roll_back) {
        (Ok(_), Err(e)) => {
            assert_eq!(e.code(), Code::FailedPrecondition);
            assert_eq!((a.on_hand, a.reserved), (88, 0));
        }
        (Err(e), Ok(_)) => {
            assert_eq!(e.code(), Code::FailedPrecondition);
            assert_eq!((a.on_hand, a.reserved), (93, 0));
        }
        other => panic!("exactly one of commit and roll back must win: {other:?}"),
    }
    inv.stop().await;
}
