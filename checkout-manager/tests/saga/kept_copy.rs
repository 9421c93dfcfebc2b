//! The kept copy of an order awaiting its payment: when it is used, and when it is read again.

use super::*;

#[tokio::test]
async fn an_order_left_waiting_for_its_payment_is_kept_exactly_as_a_read_gives_it() {
    let f = fixture(settings()).await;
    let id = f.take_in().await;
    let kept = f.saga.awaiting.peek(&id).expect("kept while it waits for its payment");
    let read = orders::load(&f.pool, &id).await.unwrap().expect("stored");
    // Field for field, the timeline and the microsecond times included: a final event built from the copy
    // equals what a later read shows.
    assert_eq!(kept, read);

    f.pay(&id, 1, PaymentOutcome::Succeeded).await;
    assert_eq!(f.status(&id).await, "CONFIRMED");
    assert_eq!(f.stock.calls("commit"), 1);
    assert!(f.saga.awaiting.peek(&id).is_none(), "a result takes the copy; a final order is not kept");
    f.done().await;
}

#[tokio::test]
async fn a_kept_copy_another_instance_moved_past_is_read_again_and_the_late_success_refunded() {
    let f = fixture(SagaSettings { max_payment_attempts: 1, ..settings() }).await;
    let id = f.take_in().await;
    assert!(f.saga.awaiting.peek(&id).is_some());

    // Another instance's driver finds the payment overdue, gives up and rolls the order back; this
    // instance's copy still says it waits for its payment.
    let other = Saga { awaiting: Arc::default(), ..f.saga.clone() };
    f.make_due(&id).await;
    drive_with(&other, &f.pool).await;
    assert_eq!(f.status(&id).await, "FAILED");
    assert!(f.saga.awaiting.peek(&id).is_some(), "the copy went stale");

    // The success reaches this instance: its write is refused by the version, it reads the order again,
    // and gives the money back instead of confirming.
    f.pay(&id, 1, PaymentOutcome::Succeeded).await;
    assert_eq!(f.status(&id).await, "FAILED", "a stale copy never revives the order");
    assert_eq!(
        kinds_of(&f.to_provider().await),
        [kinds::PAYMENT_CHARGE, kinds::PAYMENT_REFUND, kinds::PAYMENT_REFUND],
        "the give-up's refund to be sure, and the late success's"
    );
    let version: i64 = sqlx::query_scalar("SELECT version FROM orders WHERE order_id = $1")
        .bind(&id)
        .fetch_one(&f.pool)
        .await
        .unwrap();
    assert_eq!(orders::load(&f.pool, &id).await.unwrap().unwrap().version, version);
    f.done().await;
}

#[tokio::test]
async fn a_copy_older_than_half_the_payment_timeout_is_not_used() {
    let payment_timeout = Duration::from_millis(300);
    let f = fixture(SagaSettings { max_payment_attempts: 1, payment_timeout, ..settings() }).await;
    let id = f.take_in().await;

    // The timeout passes with no answer; another instance's driver gives the order up.
    tokio::time::sleep(payment_timeout + Duration::from_millis(50)).await;
    let other = Saga { awaiting: Arc::default(), ..f.saga.clone() };
    drive_with(&other, &f.pool).await;
    assert_eq!(f.status(&id).await, "FAILED");
    assert!(f.saga.awaiting.peek(&id).is_some(), "this instance still holds its old copy");

    // The late success is decided from a read: inventory is never asked to commit the released hold.
    f.pay(&id, 1, PaymentOutcome::Succeeded).await;
    assert_eq!(f.stock.calls("commit"), 0, "an old copy reached inventory");
    assert_eq!(f.status(&id).await, "FAILED");
    assert_eq!(kinds_of(&f.to_provider().await), [kinds::PAYMENT_CHARGE, kinds::PAYMENT_REFUND, kinds::PAYMENT_REFUND]);
    f.done().await;
}

#[tokio::test]
async fn a_failure_of_an_attempt_a_stale_copy_does_not_know_is_decided_from_a_read() {
    let f = fixture(settings()).await;
    let id = f.take_in().await;

    // Another instance takes attempt 1's failure and asks again (attempt 2); this instance's copy still
    // waits for attempt 1.
    let other = Saga { awaiting: Arc::default(), ..f.saga.clone() };
    let failed = |attempt| PaymentResult {
        payment_id: id.clone(),
        order_id: OrderId::parse(id.as_str()).unwrap(),
        attempt,
        outcome: PaymentOutcome::TechnicalFailure { reason: "provider hiccup".into() },
    };
    other.on_payment_result(&failed(1)).await.unwrap();
    drive_with(&other, &f.pool).await;
    assert_eq!(f.to_provider().await.len(), 2, "attempt 2 asked for");

    // Attempt 2's failure reaches this instance: it is a retry, not a stale answer to drop.
    f.saga.on_payment_result(&failed(2)).await.unwrap();
    drive_with(&other, &f.pool).await;
    assert_eq!(kinds_of(&f.to_provider().await), [kinds::PAYMENT_CHARGE; 3], "attempt 3 asked for at once");
    f.done().await;
}
