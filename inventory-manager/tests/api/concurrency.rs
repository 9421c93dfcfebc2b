//! Many clients at once: never oversell, never deadlock, always conserve stock.

use std::time::Duration;

use futures::future::join_all;
use tonic::Code;

use crate::helpers::{reserve_request, spawn_inventory, spawn_inventory_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_single_unit_reservations_get_exactly_the_stock() {
    const UNITS: i64 = 25;
    const BUYERS: usize = 120;
    let mut inv = spawn_inventory().await;
    inv.product("scarce", UNITS).await;

    let attempts = (0..BUYERS).map(|i| {
        let mut client = inv.client.clone();
        tokio::spawn(async move { client.reserve(reserve_request(&format!("buyer-{i}"), &[("scarce", 1)], 0)).await })
    });
    let mut won = 0;
    for result in join_all(attempts).await {
        match result.unwrap() {
            Ok(_) => won += 1,
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
        }
    }
    assert_eq!(won, UNITS, "exactly the units on hand were reserved");
    let s = inv.stock("scarce").await;
    assert_eq!((s.on_hand, s.reserved, s.available), (UNITS, UNITS, 0));
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations WHERE status = 'held'")
        .fetch_one(&inv.pool)
        .await
        .unwrap();
    assert_eq!(held, UNITS);
    inv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_copies_of_one_reservation_hold_once() {
    // A reservation takes the one-statement path: copies racing on it must still resolve to one hold, with
    // one line and with several.
    const COPIES: usize = 24;
    let mut inv = spawn_inventory().await;
    inv.product("p", 100).await;
    inv.product("q", 100).await;
    for (id, lines, lines_held) in [("one", &[("p", 3)][..], 1), ("two", &[("q", 1), ("p", 3)][..], 2)] {
        let copies = (0..COPIES).map(|_| {
            let mut client = inv.client.clone();
            tokio::spawn(async move { client.reserve(reserve_request(id, lines, 0)).await })
        });
        let mut answers = Vec::new();
        for result in join_all(copies).await {
            answers.push(result.unwrap().expect("every copy is answered with the reservation").into_inner());
        }
        assert!(answers.windows(2).all(|w| w[0].created_at == w[1].created_at), "one reservation answers every copy");
        let held: i64 = sqlx::query_scalar("SELECT count(*) FROM reservation_lines WHERE reservation_id = $1")
            .bind(id)
            .fetch_one(&inv.pool)
            .await
            .unwrap();
        assert_eq!(held, lines_held);
    }
    let p = inv.stock("p").await;
    assert_eq!((p.on_hand, p.reserved, p.available), (100, 6, 94), "each reservation held once");
    let q = inv.stock("q").await;
    assert_eq!((q.on_hand, q.reserved), (100, 1));
    inv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_multi_line_reservations_in_opposite_orders_never_deadlock() {
    const UNITS: i64 = 30;
    const BUYERS: usize = 80;
    let mut inv = spawn_inventory().await;
    for p in ["x", "y", "z"] {
        inv.product(p, UNITS).await;
    }
    let attempts = (0..BUYERS).map(|i| {
        let mut client = inv.client.clone();
        // Half ask x→y→z, half z→y→x: a server locking in request order would deadlock here.
        let lines: &[(&str, i64)] =
            if i % 2 == 0 { &[("x", 1), ("y", 1), ("z", 1)] } else { &[("z", 1), ("y", 1), ("x", 1)] };
        let request = reserve_request(&format!("multi-{i}"), lines, 0);
        tokio::spawn(async move { client.reserve(request).await })
    });
    let mut won = 0;
    for result in join_all(attempts).await {
        match result.unwrap() {
            Ok(_) => won += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "no deadlock or internal error: {status:?}")
            }
        }
    }
    assert_eq!(won, UNITS);

    // Settle them concurrently, half commit and half roll back, again without deadlocks.
    let settles = (0..BUYERS).map(|i| {
        let mut client = inv.client.clone();
        let id = format!("multi-{i}");
        tokio::spawn(async move {
            if i % 2 == 0 {
                client
                    .commit_reservation(ordermesh_proto::inventory::v1::CommitReservationRequest { reservation_id: id })
                    .await
                    .map(|_| ())
            } else {
                client
                    .roll_back_reservation(ordermesh_proto::inventory::v1::RollBackReservationRequest {
                        reservation_id: id,
                    })
                    .await
                    .map(|_| ())
            }
        })
    });
    for result in join_all(settles).await {
        if let Err(status) = result.unwrap() {
            assert_eq!(status.code(), Code::NotFound, "only the losers of the first round are unknown: {status:?}");
        }
    }
    let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations WHERE status = 'committed'")
        .fetch_one(&inv.pool)
        .await
        .unwrap();
    for p in ["x", "y", "z"] {
        let s = inv.stock(p).await;
        assert_eq!(s.reserved, 0, "{p}: every hold settled");
        assert_eq!(s.on_hand, UNITS - committed, "{p}: stock conserved, sold = committed");
    }
    inv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_case_ids_keep_one_lock_order_and_stay_idempotent() {
    // Byte order and a linguistic collation disagree on these: "Zeta" < "alpha" < "beta" in bytes, but
    // "alpha" < "beta" < "Zeta" in en_US, the default of many PostgreSQL installs (this machine's is C.UTF-8).
    let mut inv = spawn_inventory().await;
    sqlx::query(r#"ALTER TABLE reservation_lines ALTER COLUMN product_id TYPE text COLLATE "en-x-icu""#)
        .execute(&inv.pool)
        .await
        .unwrap();
    for p in ["alpha", "Zeta", "beta"] {
        inv.product(p, 100).await;
    }
    let lines = [("alpha", 1), ("Zeta", 1), ("beta", 1)];
    let first = inv.reserve("mixed", &lines).await.unwrap();
    assert_eq!(inv.reserve("mixed", &lines).await.unwrap(), first, "the same lines are the same reservation");
    let ids: Vec<_> = first.lines.iter().map(|l| l.product_id.as_str()).collect();
    assert_eq!(ids, ["Zeta", "alpha", "beta"]);

    // Reserves, commits and roll-backs over the same three rows at once: none may fail.
    let work = (0..60).map(|i| {
        let mut client = inv.client.clone();
        tokio::spawn(async move {
            let id = format!("m{i}");
            client.reserve(reserve_request(&id, &[("beta", 1), ("Zeta", 1), ("alpha", 1)], 0)).await?;
            let id = ordermesh_proto::inventory::v1::CommitReservationRequest { reservation_id: id };
            client.commit_reservation(id).await.map(|_| ())
        })
    });
    for result in join_all(work).await {
        result.unwrap().expect("no deadlock or internal error");
    }
    for p in ["alpha", "Zeta", "beta"] {
        assert_eq!(inv.stock(p).await.on_hand, 40);
    }
    inv.stop().await;
}

#[tokio::test]
async fn the_database_itself_refuses_broken_counters() {
    let inv = spawn_inventory().await;
    sqlx::query("INSERT INTO products (product_id, name, price_cents) VALUES ('p', 'P', 1)")
        .execute(&inv.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO stock (product_id, on_hand, counted_on_hand) VALUES ('p', 3, 3)")
        .execute(&inv.pool)
        .await
        .unwrap();
    for sql in [
        "UPDATE stock SET reserved = 4 WHERE product_id = 'p'",
        "UPDATE stock SET on_hand = -1 WHERE product_id = 'p'",
        "UPDATE stock SET reserved = -1 WHERE product_id = 'p'",
        "INSERT INTO products (product_id, name, price_cents) VALUES ('neg', 'N', -5)",
    ] {
        let err = sqlx::query(sql).execute(&inv.pool).await.expect_err(sql);
        assert_eq!(err.as_database_error().and_then(|e| e.code()).as_deref(), Some("23514"), "{sql}: {err}");
    }
    inv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn beyond_the_per_connection_limit_calls_are_refused_at_once_and_stock_still_balances() {
    const BUYERS: usize = 64;
    let mut inv = crate::helpers::spawn_inventory_with(|c| c.max_in_flight_per_connection = 1).await;
    inv.product("busy", 1_000).await;
    // One connection, many calls at once: the one admitted holds the only slot while the others arrive.
    let attempts = (0..BUYERS).map(|i| {
        let mut client = inv.client.clone();
        tokio::spawn(async move { client.reserve(reserve_request(&format!("busy-{i}"), &[("busy", 1)], 0)).await })
    });
    let (mut won, mut shed) = (0i64, 0);
    for result in join_all(attempts).await {
        match result.unwrap() {
            Ok(_) => won += 1,
            Err(status) => {
                // tonic's load shedding answers RESOURCE_EXHAUSTED; both callers treat it as transient.
                assert_eq!(status.code(), Code::ResourceExhausted, "refused at once, to be retried: {status:?}");
                shed += 1;
            }
        }
    }
    assert!(won >= 1 && shed >= 1, "some served ({won}) and some shed ({shed})");
    let s = inv.stock("busy").await;
    assert_eq!((s.on_hand, s.reserved, s.available), (1_000, won, 1_000 - won), "only what was served is held");
    // A refused call retried later is served.
    inv.reserve("busy-retry", &[("busy", 1)]).await.expect("served once the burst is over");
    inv.stop().await;
}

#[tokio::test]
async fn a_stock_row_an_operator_holds_makes_a_reservation_unavailable_at_the_lock_bound_not_a_hang() {
    let mut inv = spawn_inventory_with(|c| c.database.lock_timeout = Duration::from_millis(300)).await;
    inv.product("hot", 10).await;

    // An operator's open transaction on the product's stock row (psql, left open).
    let mut operator = inv.pool.acquire().await.unwrap();
    sqlx::raw_sql(
        "SET idle_in_transaction_session_timeout = 0; BEGIN; UPDATE stock SET on_hand = on_hand WHERE product_id = 'hot'",
    )
    .execute(&mut *operator)
    .await
    .unwrap();

    let started = std::time::Instant::now();
    let refused = tokio::time::timeout(Duration::from_secs(10), inv.reserve("order-1", &[("hot", 1)]))
        .await
        .expect("the reservation gives up at the lock bound instead of waiting for the operator")
        .expect_err("the row is held");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "gave up after {:?}", started.elapsed());

    // Once the operator is done, the same reservation goes through, once.
    sqlx::raw_sql("ROLLBACK").execute(&mut *operator).await.unwrap();
    drop(operator);
    inv.reserve("order-1", &[("hot", 1)]).await.expect("held now");
    let hot = inv.stock("hot").await;
    assert_eq!((hot.on_hand, hot.reserved), (10, 1));
    inv.stop().await;
}
