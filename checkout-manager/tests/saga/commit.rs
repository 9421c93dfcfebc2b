//! The commit of a paid order's hold: confirmed only by a commit inventory made.

use super::*;

#[tokio::test]
async fn a_hold_that_expired_before_commit_fails_the_order_and_refunds_the_payment() {
    let f = fixture(settings()).await;
    f.stock.commit.lock().unwrap().push_back(Ok(Held::Released));
    let id = f.place().await;
    f.drive_all().await;
    f.pay(&id, 1, PaymentOutcome::Succeeded).await;
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "FAILED");
    assert_eq!(kinds_of(&f.to_provider().await), [kinds::PAYMENT_CHARGE, kinds::PAYMENT_REFUND]);
    f.done().await;
}

#[tokio::test]
async fn a_commit_answered_with_the_stock_still_held_is_asked_again_not_confirmed() {
    let f = fixture(settings()).await;
    f.stock.commit.lock().unwrap().push_back(Ok(Held::Held));
    let id = f.place().await;
    f.drive_all().await;
    f.pay(&id, 1, PaymentOutcome::Succeeded).await;
    assert_ne!(f.status(&id).await, "CONFIRMED", "not confirmed on a hold inventory did not commit");
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "CONFIRMED");
    assert_eq!(f.stock.calls("commit"), 2);
    assert_eq!(kinds_of(&f.to_provider().await), [kinds::PAYMENT_CHARGE], "no refund");
    f.done().await;
}
