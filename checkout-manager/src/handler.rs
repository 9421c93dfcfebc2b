//! The AMQP transport of checkout-manager: new orders, order reads (and the operators' view), payment results
//! and refund acknowledgements.

use ordermesh_bus::{Handled, Incoming, Outcome};
use ordermesh_messages::{
    Envelope, ReplyError,
    admin::{OrdersRequest, OverviewRequest},
    kinds,
    money::Money,
    payloads::{GetOrder, PaymentResult, PlaceOrder, RefundDone, TakenIn, WhichTakenIn},
};

use crate::{admin, error::CheckoutError, orders, refunds, saga::Saga};

/// `checkout-manager.jobs`: `order.place`.
pub async fn on_job(saga: &Saga, incoming: Incoming) -> Handled {
    if incoming.envelope.kind != kinds::ORDER_PLACE {
        return Err(Outcome::unknown_kind(&incoming.envelope.kind));
    }
    let order = incoming.decode::<PlaceOrder>()?;
    check_order(&order).map_err(Outcome::DeadLetter)?;
    // The first steps run here rather than after a trip through the driver; an order that could not be
    // stored is asked for again (its reservation, already held, is answered again, not held twice).
    Ok(match saga.take_in(&order).await {
        Ok(_) => Outcome::Ack,
        Err(e) => transient(e),
    })
}

fn check_order(order: &PlaceOrder) -> Result<(), String> {
    if order.lines.is_empty() {
        return Err("an order needs at least one line".into());
    }
    let mut products: Vec<_> = order.lines.iter().map(|l| &l.product_id).collect();
    products.sort();
    if products.windows(2).any(|w| w[0] == w[1]) {
        return Err("an order lists a product twice".into());
    }
    if order.lines.iter().any(|l| l.quantity <= 0 || l.unit_price_cents < 0) {
        return Err("order lines need a positive quantity and a price of 0 or more".into());
    }
    let lines = order.lines.iter().map(|l| (l.quantity, Money::cents(l.unit_price_cents)));
    if Money::total(lines) != Some(Money::cents(order.total_cents)) {
        return Err(format!("total_cents {} does not match the lines", order.total_cents));
    }
    Ok(())
}

/// `checkout-manager.queries`: `order.get`, `order.taken_in` and the operators' queries.
pub async fn on_query(saga: &Saga, incoming: Incoming) -> Handled {
    Ok(match incoming.envelope.kind.as_str() {
        kinds::ORDER_GET => reply(orders::view(&saga.pool, &incoming.decode::<GetOrder>()?.order_id).await),
        kinds::ORDER_TAKEN_IN => {
            let r = incoming.decode::<WhichTakenIn>()?;
            if r.order_ids.len() > WhichTakenIn::MAX {
                return Err(Outcome::DeadLetter(format!(
                    "order.taken_in names {} orders; at most {} may be asked at once",
                    r.order_ids.len(),
                    WhichTakenIn::MAX
                )));
            }
            reply(orders::taken_in(&saga.pool, &r.order_ids).await.map(|order_ids| TakenIn { order_ids }))
        }
        kinds::ADMIN_OVERVIEW => reply(admin::overview(&saga.pool, &incoming.decode::<OverviewRequest>()?).await),
        kinds::ADMIN_ORDERS => reply(admin::orders(&saga.pool, &incoming.decode::<OrdersRequest>()?).await),
        other => return Err(Outcome::unknown_kind(other)),
    })
}

/// A query's answer, or its error as the reply's error.
fn reply<T: serde::Serialize>(result: Result<T, CheckoutError>) -> Outcome {
    let result = result.map_err(|e| ReplyError::from(&e));
    Outcome::Reply(Envelope::new(kinds::REPLY, &result))
}

/// `checkout-manager.payment-results`: `payment.result` and `payment.refunded`.
pub async fn on_payment_result(saga: &Saga, incoming: Incoming) -> Handled {
    let done = match incoming.envelope.kind.as_str() {
        kinds::PAYMENT_REFUNDED => refunds::acknowledged(&saga.pool, &incoming.decode::<RefundDone>()?).await,
        kinds::PAYMENT_RESULT => saga.on_payment_result(&incoming.decode::<PaymentResult>()?).await,
        other => return Err(Outcome::unknown_kind(other)),
    };
    Ok(match done {
        Ok(()) => Outcome::Ack,
        Err(e) => transient(e),
    })
}

fn transient(e: CheckoutError) -> Outcome {
    match e {
        CheckoutError::InvalidMessage(reason) => Outcome::DeadLetter(reason),
        other => Outcome::Retry(other.to_string()),
    }
}
