//! A supervised consumer: decodes each delivery, calls the handler, then acks, replies, retries or dead-letters.
//!
//! It survives RabbitMQ restarts by waiting for the bus to reconnect and consuming again; anything
//! unacked at the break is redelivered, which is why every handler must be idempotent.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use futures::StreamExt;
use lapin::{
    BasicProperties,
    message::Delivery,
    options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use ordermesh_messages::Envelope;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    connection::Bus,
    publisher::{Outgoing, Publisher},
    topology::Topology,
};

/// Header carrying why a message was dead-lettered.
pub const REASON_HEADER: &str = "x-ordermesh-reason";
/// Header naming the queue a dead-lettered message came from.
pub const ORIGIN_HEADER: &str = "x-ordermesh-original-queue";

/// A decoded delivery handed to a handler.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The message.
    pub envelope: Envelope,
    /// Where the sender wants its reply, for requests.
    pub reply_to: Option<String>,
    /// Whether the broker delivered it before (the handler must not act twice).
    pub redelivered: bool,
}

/// What to do with a delivery once handled.
#[derive(Debug)]
pub enum Outcome {
    /// Done.
    Ack,
    /// Done; send this reply to the sender first (a missing `reply_to` just acks).
    Reply(Envelope),
    /// A passing failure (a dependency is down): requeue after a pause.
    Retry(String),
    /// It can never be handled: move it to the dead-letter queue with this reason.
    DeadLetter(String),
}

/// A message handler: shared, cloned into every delivery's task.
pub type Handler = Arc<dyn Fn(Incoming) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// Wraps an async function of a delivery as a [`Handler`].
pub fn handler_fn<F, Fut>(f: F) -> Handler
where
    F: Fn(Incoming) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    Arc::new(move |incoming| Box::pin(f(incoming)))
}

/// Consumes `queue` with `prefetch` deliveries in flight, until `stop` turns true.
pub fn spawn_consumer(
    bus: Bus,
    publisher: Arc<Publisher>,
    queue: String,
    prefetch: u16,
    handler: Handler,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Some(channel) = bus.wait_for_channel(&mut stop).await else { return };
            let tag = format!("{queue}.{}", uuid::Uuid::new_v4().simple());
            let consumer = async {
                channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
                channel
                    .basic_consume(
                        queue.as_str().into(),
                        tag.as_str().into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
            };
            let consumer = match consumer.await {
                Ok(c) => c,
                Err(err) => {
                    tracing::warn!(%queue, error = %err, "could not start consuming; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            tracing::info!(%queue, "consuming");
            // On stop, cancel the subscription: the stream then ends after the in-flight deliveries finish.
            let canceller = {
                let channel = channel.clone();
                let tag = tag.clone();
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    while !*stop.borrow() {
                        if stop.changed().await.is_err() {
                            break;
                        }
                    }
                    let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                })
            };
            consumer
                .for_each_concurrent(usize::from(prefetch), |delivery| {
                    let handler = handler.clone();
                    let publisher = publisher.clone();
                    let queue = queue.clone();
                    async move {
                        match delivery {
                            Ok(delivery) => handle_delivery(delivery, &queue, &handler, &publisher).await,
                            Err(err) => tracing::warn!(%queue, error = %err, "consumer error"),
                        }
                    }
                })
                .await;
            canceller.abort();
            let _ = channel.close(200, "consumer done".into()).await;
            if *stop.borrow() {
                return;
            }
            tracing::warn!(%queue, "consumer stream ended; waiting for the connection");
        }
    })
}

async fn handle_delivery(delivery: Delivery, queue: &str, handler: &Handler, publisher: &Publisher) {
    let envelope = match Envelope::from_slice(&delivery.data) {
        Ok(e) => e,
        Err(reason) => return dead_letter(delivery, queue, &reason, publisher).await,
    };
    let incoming = Incoming {
        envelope,
        reply_to: delivery.properties.reply_to().as_ref().map(|s| s.as_str().to_owned()),
        redelivered: delivery.redelivered,
    };
    let reply_to = incoming.reply_to.clone();
    let correlation = incoming.envelope.message_id.to_string();
    // A panicking handler is a bug: the message goes to the dead-letter queue instead of looping forever.
    let outcome = tokio::spawn((handler)(incoming))
        .await
        .unwrap_or_else(|e| Outcome::DeadLetter(format!("handler panicked: {e}")));
    match outcome {
        Outcome::Ack => ack(&delivery).await,
        Outcome::Reply(reply) => {
            if let Some(to) = reply_to {
                let reply = reply.correlated(correlation);
                if let Err(err) = publisher.publish(Outgoing::to_queue(&to, reply)).await {
                    // The work is done and idempotent; a lost reply surfaces as the caller's timeout.
                    tracing::warn!(error = %err, "could not send reply");
                }
            }
            ack(&delivery).await;
        }
        Outcome::Retry(reason) => {
            tracing::warn!(%queue, %reason, "transient failure; requeueing");
            let pause = if delivery.redelivered { Duration::from_secs(1) } else { Duration::from_millis(200) };
            tokio::time::sleep(pause).await;
            let _ = delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
        }
        Outcome::DeadLetter(reason) => dead_letter(delivery, queue, &reason, publisher).await,
    }
}

async fn ack(delivery: &Delivery) {
    if let Err(err) = delivery.ack(BasicAckOptions::default()).await {
        tracing::warn!(error = %err, "ack failed; the message will be redelivered");
    }
}

/// Republishes the raw message to the queue's dead-letter exchange with the reason, then acks it.
/// If that fails the broker's own dead-lettering (nack without requeue) still keeps the message.
async fn dead_letter(delivery: Delivery, queue: &str, reason: &str, publisher: &Publisher) {
    tracing::error!(%queue, %reason, "dead-lettering message");
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
    headers.insert(ORIGIN_HEADER.into(), AMQPValue::LongString(queue.into()));
    let props: BasicProperties = delivery.properties.clone().with_headers(headers);
    match publisher.publish_raw(&Topology::dead_letter_exchange(queue), "", &delivery.data, props).await {
        Ok(()) => ack(&delivery).await,
        Err(_) => {
            let _ = delivery.nack(BasicNackOptions { requeue: false, ..Default::default() }).await;
        }
    }
}
