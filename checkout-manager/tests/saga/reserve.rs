//! Taking in a new order: the reservation, stored once with what it leads to, refused or left to the driver.

use super::*;

#[tokio::test]
async fn insufficient_stock_rejects_the_order_and_asks_for_no_money() {
    let f = fixture(settings()).await;
    f.stock.reserve.lock().unwrap().push_back(Err(InventoryFailure::Refused("insufficient stock for mug".into())));
    let id = f.place().await;
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "REJECTED");
    assert!(f.to_provider().await.is_empty());
    assert_eq!(f.stock.calls("roll_back"), 0, "nothing was held");
    f.done().await;
}

#[tokio::test]
async fn a_hold_taken_by_other_lines_is_rolled_back_rather_than_left_to_expire() {
    let f = fixture(settings()).await;
    f.stock
        .reserve
        .lock()
        .unwrap()
        .push_back(Err(InventoryFailure::Conflict("reservation exists with other lines".into())));
    let id = f.place().await;
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "FAILED");
    assert_eq!(f.stock.calls("roll_back"), 1);
    f.done().await;
}

#[tokio::test]
async fn inventory_down_is_retried_up_to_the_limit_then_the_order_fails_with_the_hold_released() {
    let f = fixture(settings()).await;
    for _ in 0..5 {
        f.stock.reserve.lock().unwrap().push_back(Err(InventoryFailure::Transient("unavailable".into())));
    }
    let id = f.place().await;
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "FAILED");
    assert_eq!(f.stock.calls("reserve"), 3, "max_reserve_attempts");
    assert_eq!(f.stock.calls("roll_back"), 1, "a hold taken unheard of is released");
    f.done().await;
}

#[tokio::test]
async fn a_new_order_is_stored_once_as_its_reservation_and_charge_request_leave_it() {
    let f = fixture(settings()).await;
    let order = Fixture::new_order();
    let id = order.order_id.to_string();
    assert!(f.saga.take_in(&order).await.unwrap(), "a new order is taken in");
    assert_eq!(f.status(&id).await, "PAYMENT_PENDING");
    assert_eq!(f.stock.calls("reserve"), 1);
    let timeline: Vec<(String, String)> = f.timeline(&id).await;
    let steps: Vec<(&str, &str)> = timeline.iter().map(|(s, o)| (s.as_str(), o.as_str())).collect();
    assert_eq!(steps, [("created", "ok"), ("reserve", "ok"), ("payment", "requested")]);
    assert_eq!(f.events(&id).await, ["order.created", "order.reserved", "order.payment_pending"]);
    assert_eq!(kinds_of(&f.to_provider().await), [kinds::PAYMENT_CHARGE]);
    let version: i64 = sqlx::query_scalar("SELECT version FROM orders WHERE order_id = $1")
        .bind(&id)
        .fetch_one(&f.pool)
        .await
        .unwrap();
    assert_eq!(version, 0, "one write");

    // Redelivered: inventory is asked again (it answers with the hold it has), and nothing else changes.
    assert!(!f.saga.take_in(&order).await.unwrap(), "an order taken in already");
    assert_eq!(f.timeline(&id).await.len(), 3);
    assert_eq!(f.to_provider().await.len(), 1, "no second charge request");

    f.pay(&id, 1, PaymentOutcome::Succeeded).await;
    assert_eq!(f.status(&id).await, "CONFIRMED");
    assert_eq!(f.stock.calls("commit"), 1);
    f.done().await;
}

#[tokio::test]
async fn a_new_order_short_of_stock_is_stored_rejected_and_one_inventory_cannot_reach_is_left_to_the_driver() {
    let f = fixture(settings()).await;
    f.stock.reserve.lock().unwrap().push_back(Err(InventoryFailure::Refused("insufficient stock for mug".into())));
    let rejected = Fixture::new_order();
    assert!(f.saga.take_in(&rejected).await.unwrap());
    let id = rejected.order_id.to_string();
    assert_eq!(f.status(&id).await, "REJECTED");
    assert_eq!(f.events(&id).await, ["order.created", "order.rejected"]);
    assert!(f.to_provider().await.is_empty(), "no money asked for");

    // Inventory unreachable: stored PENDING with the retry scheduled, and the driver carries on from there.
    f.stock.reserve.lock().unwrap().push_back(Err(InventoryFailure::Transient("inventory unavailable".into())));
    let waiting = Fixture::new_order();
    assert!(f.saga.take_in(&waiting).await.unwrap());
    let id = waiting.order_id.to_string();
    assert_eq!(f.status(&id).await, "PENDING");
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "PAYMENT_PENDING");
    assert_eq!(f.stock.calls("reserve"), 3);
    f.done().await;
}
