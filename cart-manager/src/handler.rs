//! The AMQP transport of cart-manager: decode a job, call the domain, reply.

use std::sync::Arc;

use ordermesh_bus::{Handled, Incoming, Outcome, Topology, outbox};
use ordermesh_lifecycle::Alarm;
use ordermesh_messages::{
    Envelope, ReplyError, kinds,
    payloads::{AddItem, Checkout, CheckoutAccepted, GetCart, GetOrder, RemoveItem},
};
use ordermesh_telemetry::Metrics;
use serde::Serialize;
use sqlx::PgPool;

use crate::{cart, error::CartError, handover, inventory::Inventory};

/// What a job handler needs.
#[derive(Debug, Clone)]
pub struct CartContext {
    /// cart's database.
    pub pool: PgPool,
    /// inventory-manager.
    pub inventory: Inventory,
    /// Queue names (checkout's queue for the outbox).
    pub topology: Topology,
    /// The outbox relay, given the row a checkout queued once it commits.
    pub outbox: Arc<outbox::Handoff>,
    /// Wakes the hand-over check when a new checkout's first question falls due.
    pub handovers: Arc<Alarm>,
    /// Where dropped requests are counted.
    pub metrics: Metrics,
}

/// Handles one job from `cart-manager.jobs`.
pub async fn handle(ctx: &CartContext, incoming: Incoming) -> Handled {
    let envelope = &incoming.envelope;
    let request =
        |key| cart::Request { message_id: envelope.message_id, idempotency_key: key, deadline: envelope.deadline };
    let reply = match envelope.kind.as_str() {
        kinds::CART_ADD_ITEM => {
            let r = incoming.decode::<AddItem>()?;
            let request = request(r.idempotency_key.as_ref());
            respond(cart::add_item(&ctx.pool, &ctx.inventory, &request, &r.client_id, &r.product_id, r.quantity).await)
        }
        kinds::CART_REMOVE_ITEM => {
            let r = incoming.decode::<RemoveItem>()?;
            let request = request(r.idempotency_key.as_ref());
            respond(cart::remove_item(&ctx.pool, &request, &r.client_id, &r.product_id).await)
        }
        kinds::CART_GET => {
            let r = incoming.decode::<GetCart>()?;
            respond(cart::view(&ctx.pool, &ctx.inventory, &r.client_id).await)
        }
        kinds::CART_CHECKOUT => {
            let r = incoming.decode::<Checkout>()?;
            let result =
                cart::checkout(&ctx.pool, &ctx.inventory, &ctx.topology, &r, envelope.deadline).await.map(|done| {
                    if done.created {
                        ctx.handovers.due_in(handover::FIRST_CHECK_AFTER);
                    }
                    ctx.outbox.hand(done.outbox);
                    CheckoutAccepted { order_id: done.order_id, created: done.created }
                });
            respond(result)
        }
        kinds::CART_GET_CHECKOUT => {
            let r = incoming.decode::<GetOrder>()?;
            respond(
                cart::checkout_snapshot(&ctx.pool, &r.order_id)
                    .await
                    .and_then(|s| s.ok_or_else(|| CartError::UnknownOrder(r.order_id.clone()))),
            )
        }
        other => return Err(Outcome::unknown_kind(other)),
    };
    Ok(match reply {
        Some(reply) => Outcome::Reply(reply),
        // Nobody waits for the answer, and nothing was changed.
        None => {
            ordermesh_bus::consumer::count_expired(&ctx.metrics, &ctx.topology.cart_jobs(), &envelope.kind);
            Outcome::Ack
        }
    })
}

/// The reply, or `None` when the caller's deadline passed before anything was applied.
fn respond<T: Serialize>(result: Result<T, CartError>) -> Option<Envelope> {
    if matches!(result, Err(CartError::Expired)) {
        return None;
    }
    let reply: Result<T, ReplyError> = result.map_err(|e| ReplyError::from(&e));
    Some(Envelope::new(kinds::REPLY, &reply))
}
