//! The AMQP transport of checkout-manager: new orders, order reads (and the operators' view), payment results
//! and refund acknowledgements.

use ordermesh_bus::{Incoming, Outcome};
use ordermesh_messages::{
    Envelope, ReplyError,
    admin::{OrdersRequest, OverviewRequest},
    kinds,
    payloads::{GetOrder, PaymentResult, PlaceOrder, RefundDone, TakenIn, WhichTakenIn},
};

use crate::{admin, error::CheckoutError, orders, refunds, saga::Saga};

/// `checkout-manager.jobs`: `order.place`.
pub async fn on_job(saga: &Saga, incoming: Incoming) -> Outcome {
    if incoming.envelope.kind != kinds::ORDER_PLACE {
        return Outcome::DeadLetter(format!("unknown message type {:?}", incoming.envelope.kind));
    }
    let order: PlaceOrder = match incoming.envelope.payload() {
        Ok(o) => o,
        Err(reason) => return Outcome::DeadLetter(reason),
    };
    if let Err(reason) = check_order(&order) {
        return Outcome::DeadLetter(reason);
    }
    // The first steps run here rather than after a trip through the driver; an order that could not be
    // stored is asked for again (its reservation, already held, is answered again, not held twice).
    match saga.take_in(&order).await {
        Ok(_) => Outcome::Ack,
        Err(e) => transient(e),
    }
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
    let total = ordermesh_messages::money::total_cents(order.lines.iter().map(|l| (l.quantity, l.unit_price_cents)));
    if total != Some(order.total_cents) {
        return Err(format!("total_cents {} does not match the lines", order.total_cents));
    }
    Ok(())
}

/// `checkout-manager.queries`: `order.get`, `order.taken_in` and the operators' queries.
pub async fn on_query(saga: &Saga, incoming: Incoming) -> Outcome {
    let envelope = &incoming.envelope;
    match envelope.kind.as_str() {
        kinds::ORDER_GET => match envelope.payload::<GetOrder>() {
            Ok(r) => reply(orders::view(&saga.pool, &r.order_id).await),
            Err(reason) => Outcome::DeadLetter(reason),
        },
        kinds::ORDER_TAKEN_IN => match envelope.payload::<WhichTakenIn>() {
            Ok(r) if r.order_ids.len() > WhichTakenIn::MAX => Outcome::DeadLetter(format!(
                "order.taken_in names {} orders; at most {} may be asked at once",
                r.order_ids.len(),
                WhichTakenIn::MAX
            )),
            Ok(r) => reply(orders::taken_in(&saga.pool, &r.order_ids).await.map(|order_ids| TakenIn { order_ids })),
            Err(reason) => Outcome::DeadLetter(reason),
        },
        kinds::ADMIN_OVERVIEW => match envelope.payload::<OverviewRequest>() {
            Ok(r) => reply(admin::overview(&saga.pool, &r).await),
            Err(reason) => Outcome::DeadLetter(reason),
        },
        kinds::ADMIN_ORDERS => match envelope.payload::<OrdersRequest>() {
            Ok(r) => reply(admin::orders(&saga.pool, &r).await),
            Err(reason) => Outcome::DeadLetter(reason),
        },
        other => Outcome::DeadLetter(format!("unknown message type {other:?}")),
    }
}

/// A query's answer, or its error as the reply's error.
fn reply<T: serde::Serialize>(result: Result<T, CheckoutError>) -> Outcome {
    let result = result.map_err(|e| ReplyError::from(&e));
    Outcome::Reply(Envelope::new(kinds::REPLY, &result))
}

/// `checkout-manager.payment-results`: `payment.result` and `payment.refunded`.
pub async fn on_payment_result(saga: &Saga, incoming: Incoming) -> Outcome {
    if incoming.envelope.kind == kinds::PAYMENT_REFUNDED {
        return match incoming.envelope.payload::<RefundDone>() {
            Ok(done) => match refunds::acknowledged(&saga.pool, &done).await {
                Ok(()) => Outcome::Ack,
                Err(e) => transient(e),
            },
            Err(reason) => Outcome::DeadLetter(reason),
        };
    }
    if incoming.envelope.kind != kinds::PAYMENT_RESULT {
        return Outcome::DeadLetter(format!("unknown message type {:?}", incoming.envelope.kind));
    }
    let result: PaymentResult = match incoming.envelope.payload() {
        Ok(r) => r,
        Err(reason) => return Outcome::DeadLetter(reason),
    };
    match saga.on_payment_result(&result).await {
        Ok(()) => Outcome::Ack,
        Err(e) => transient(e),
    }
}

fn transient(e: CheckoutError) -> Outcome {
    match e {
        CheckoutError::InvalidMessage(reason) => Outcome::DeadLetter(reason),
        other => Outcome::Retry(other.to_string()),
    }
}
