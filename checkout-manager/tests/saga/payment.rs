//! The charge: asked for with the pending state, asked again, declined, failing, refunded late or again.

use super::*;

#[tokio::test]
async fn the_charge_goes_out_with_the_pending_state_and_is_asked_again_after_the_timeout() {
    let f = fixture(settings()).await;
    let id = f.place().await;
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "PAYMENT_PENDING");
    let sent = f.to_provider().await;
    assert_eq!(kinds_of(&sent), [kinds::PAYMENT_CHARGE]);
    let charge: ChargeRequest = sent[0].payload().unwrap();
    assert_eq!((charge.attempt, charge.amount_cents, charge.payment_id.as_str()), (1, 1000, id.as_str()));

    // No answer within the payment timeout: the same charge (same payment id) is asked again.
    f.make_due(&id).await;
    f.drive_all().await;
    let sent = f.to_provider().await;
    assert_eq!(kinds_of(&sent), [kinds::PAYMENT_CHARGE, kinds::PAYMENT_CHARGE]);
    assert_eq!(sent[1].payload::<ChargeRequest>().unwrap().attempt, 2);

    f.pay(&id, 2, PaymentOutcome::Succeeded).await;
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "CONFIRMED");
    assert_eq!(f.stock.calls("commit"), 1);
    f.done().await;
}

#[tokio::test]
async fn technical_failures_are_retried_up_to_the_limit_then_the_order_fails_without_a_refund() {
    let f = fixture(settings()).await;
    let id = f.place().await;
    f.drive_all().await;
    for attempt in 1..=3 {
        f.pay(&id, attempt, PaymentOutcome::TechnicalFailure { reason: "provider down".into() }).await;
        f.drive_all().await;
    }
    assert_eq!(f.status(&id).await, "FAILED");
    let sent = f.to_provider().await;
    assert_eq!(kinds_of(&sent), [kinds::PAYMENT_CHARGE; 3], "three attempts, and nothing was taken to give back");
    assert_eq!(f.stock.calls("roll_back"), 1);
    f.done().await;
}

#[tokio::test]
async fn a_success_that_arrives_after_the_saga_gave_up_is_refunded() {
    let f = fixture(SagaSettings { max_payment_attempts: 1, ..settings() }).await;
    let id = f.place().await;
    f.drive_all().await;
    f.make_due(&id).await; // the payment timeout passes with no answer, and no attempts are left
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "FAILED");
    assert_eq!(kinds_of(&f.to_provider().await), [kinds::PAYMENT_CHARGE, kinds::PAYMENT_REFUND], "refund to be sure");

    f.pay(&id, 1, PaymentOutcome::Succeeded).await;
    assert_eq!(
        kinds_of(&f.to_provider().await),
        [kinds::PAYMENT_CHARGE, kinds::PAYMENT_REFUND, kinds::PAYMENT_REFUND],
        "the late success is given back too (refunds are idempotent at the provider)"
    );
    assert_eq!(f.status(&id).await, "FAILED", "a late success never revives the order");
    f.done().await;
}

#[tokio::test]
async fn a_refund_is_asked_for_again_until_the_provider_acknowledges_it() {
    let f = fixture(settings()).await;
    f.stock.commit.lock().unwrap().push_back(Ok(Held::Released));
    let id = f.place().await;
    f.drive_all().await;
    f.pay(&id, 1, PaymentOutcome::Succeeded).await;
    f.drive_all().await;
    assert_eq!(kinds_of(&f.to_provider().await), [kinds::PAYMENT_CHARGE, kinds::PAYMENT_REFUND]);
    let owed = |pool: PgPool| async move {
        sqlx::query_as::<_, (String, i32)>("SELECT payment_id, asked FROM refunds_owed").fetch_all(&pool).await.unwrap()
    };
    assert_eq!(owed(f.pool.clone()).await, [(id.clone(), 1)], "owed with the final state that asked for it");

    let topology = &f.saga.topology;
    assert_eq!(refunds::ask_again(&f.pool, topology).await.unwrap(), 0, "not before its acknowledgement is overdue");
    // No acknowledgement came in time (the request, or the answer, was lost).
    sqlx::query("UPDATE refunds_owed SET due_at = now()").execute(&f.pool).await.unwrap();
    assert_eq!(refunds::ask_again(&f.pool, topology).await.unwrap(), 1);
    let sent = f.to_provider().await;
    assert_eq!(kinds_of(&sent), [kinds::PAYMENT_CHARGE, kinds::PAYMENT_REFUND, kinds::PAYMENT_REFUND]);
    assert_ne!(sent[1].message_id, sent[2].message_id, "a new message, not a replay a consumer could skip");
    assert_eq!(owed(f.pool.clone()).await, [(id.clone(), 2)]);
    assert_eq!(refunds::ask_again(&f.pool, topology).await.unwrap(), 0, "each ask waits for its own due time");

    let done = RefundDone { payment_id: id.clone(), order_id: OrderId::parse(id.clone()).unwrap(), refunded: true };
    refunds::acknowledged(&f.pool, &done).await.unwrap();
    assert!(owed(f.pool.clone()).await.is_empty(), "acknowledged: owed no more");
    f.done().await;
}

#[tokio::test]
async fn a_decline_releases_the_hold_and_charges_nothing_back() {
    let f = fixture(settings()).await;
    let id = f.place().await;
    f.drive_all().await;
    f.pay(&id, 1, PaymentOutcome::Declined { reason: "insufficient funds".into() }).await;
    f.pay(&id, 1, PaymentOutcome::Declined { reason: "insufficient funds".into() }).await; // a duplicate
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "PAYMENT_DECLINED");
    assert_eq!(kinds_of(&f.to_provider().await), [kinds::PAYMENT_CHARGE]);
    assert_eq!(f.stock.calls("roll_back"), 1);
    f.done().await;
}
