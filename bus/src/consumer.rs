//! A supervised consumer: decodes each delivery, calls the handler, then acks, replies, retries or dead-letters.
//!
//! It survives RabbitMQ restarts by waiting for the bus to reconnect and consuming again; anything
//! unacked at the break is redelivered, which is why every handler must be idempotent.
//!
//! Redelivery is bounded: a retry republishes the message with a counter header (classic queues do not
//! count deliveries) and acks the original; past the limit it is dead-lettered with its last reason. A
//! request whose sender's deadline has passed is dropped and counted, never dead-lettered: a dead-letter
//! queue holds only what an operator must look at, and every message in one carries its reason.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use futures::StreamExt;
use lapin::{
    BasicProperties,
    message::Delivery,
    options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use ordermesh_messages::Envelope;
use ordermesh_telemetry::Metrics;
use serde::de::DeserializeOwned;
use tokio::{sync::watch, task::JoinHandle};
use tracing::Instrument;

use crate::{
    channels::close_later,
    connection::{Bus, BusError, CHANNEL_TIMEOUT},
    publisher::{Outgoing, Publisher},
    topology::Topology,
};

/// Header carrying why a message was dead-lettered.
pub const REASON_HEADER: &str = "x-ordermesh-reason";
/// Header naming the queue a dead-lettered message came from.
pub const ORIGIN_HEADER: &str = "x-ordermesh-original-queue";
/// Header counting how often a message was handed back for a retry.
pub const RETRIES_HEADER: &str = "x-ordermesh-retries";

/// How a queue is consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerSettings {
    /// Deliveries in flight (and handled at once).
    pub prefetch: u16,
    /// Retries of one message before it is dead-lettered.
    pub max_retries: u32,
    /// A handler still running after this long is stopped and its message handed back as a passing failure:
    /// a handling that hangs (a dependency that never answers) must not hold its delivery, and a slot of the
    /// prefetch, for ever.
    pub handler_timeout: Duration,
}

impl ConsumerSettings {
    /// `prefetch` in flight, the default retry bound and handler bound.
    pub fn new(prefetch: u16) -> Self {
        Self { prefetch, max_retries: DEFAULT_MAX_RETRIES, handler_timeout: DEFAULT_HANDLER_TIMEOUT }
    }
}

/// How long a handler may run, unless configured otherwise: well past what a handling takes when its
/// dependencies answer (each of which has its own, shorter, bound).
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a reply waits for its connection to come back before it is given up.
const REPLY_PATIENCE: Duration = Duration::from_secs(1);

/// Deadline of an ack or nack: on a connection that just broke one may never complete.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Retries of one message before it is dead-lettered, unless configured otherwise.
pub const DEFAULT_MAX_RETRIES: u32 = 8;

/// Counts (in `amqp_requests_expired`) and logs a request dropped for its deadline: by the consumer before
/// handling, or by a handler whose transaction found the deadline passed.
pub fn count_expired(metrics: &Metrics, queue: &str, kind: &str) {
    Metrics::message(&metrics.families().expired, queue, kind);
    tracing::info!(%queue, %kind, "request dropped: its sender's deadline passed before it was applied");
}

/// A decoded delivery handed to a handler.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The message.
    pub envelope: Envelope,
    /// Where the sender wants its reply, for requests.
    pub reply_to: Option<String>,
    /// Whether the broker delivered it before (the handler must not act twice).
    pub redelivered: bool,
    /// How often it was handed back for a retry before this delivery.
    pub retries: u32,
}

/// What to do with a delivery once handled.
#[derive(Debug)]
pub enum Outcome {
    /// Done.
    Ack,
    /// Done; send this reply to the sender first (a missing `reply_to` just acks).
    Reply(Envelope),
    /// A passing failure (a dependency is down): hand it back after a pause, a bounded number of times.
    Retry(String),
    /// It can never be handled: move it to the dead-letter queue with this reason.
    DeadLetter(String),
}

impl Outcome {
    /// A message of a type this queue's handler does not know: dead-lettered, never retried.
    pub fn unknown_kind(kind: &str) -> Self {
        Self::DeadLetter(format!("unknown message type {kind:?}"))
    }
}

/// What a handler written with `?` returns: `Err` is the outcome that ends the handling early (a payload that
/// does not decode is dead-lettered), `Ok` the outcome of the work. Either way it is the delivery's outcome.
pub type Handled = Result<Outcome, Outcome>;

impl From<Handled> for Outcome {
    fn from(handled: Handled) -> Self {
        handled.unwrap_or_else(|early| early)
    }
}

impl Incoming {
    /// The payload as `T`, or, when it is not one, the dead-letter outcome with the reason: a message that
    /// does not decode now never will, so it is not retried.
    #[allow(clippy::result_large_err)] // handed straight back to the consumer, once per delivery
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Outcome> {
        self.envelope.payload().map_err(Outcome::DeadLetter)
    }
}

/// A message handler: shared, cloned into every delivery's task.
pub type Handler = Arc<dyn Fn(Incoming) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// Wraps an async function of a delivery as a [`Handler`]; it returns an [`Outcome`] or a [`Handled`].
pub fn handler_fn<F, Fut, O>(f: F) -> Handler
where
    F: Fn(Incoming) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = O> + Send + 'static,
    O: Into<Outcome>,
{
    Arc::new(move |incoming| {
        let handled = f(incoming);
        Box::pin(async move { handled.await.into() })
    })
}

/// The publisher a consumer answers, retries and dead-letters through, on a connection of its own.
///
/// A reply goes to the caller's direct reply-to address. When the caller's broker node is down, RabbitMQ
/// (3.10 at least) crashes the publishing channel and then closes its whole connection (`INTERNAL_ERROR`):
/// on a shared connection that would hand back every delivery in hand, the request included, whose reply
/// then crashes the next connection too, until the queue's delivery limit dead-letters work that was done.
/// On a connection of its own a failed reply costs only that reply (the caller's timeout), and the
/// deliveries are still acked.
pub fn reply_publisher(bus: &Bus, stop: watch::Receiver<bool>) -> Arc<Publisher> {
    Arc::new(Publisher::new(bus.sibling(stop)))
}

/// Consumes `queue` as `settings` say, until `stop` turns true; replies, retries and dead letters go
/// through `publisher` (see [`reply_publisher`]).
pub fn spawn_consumer(
    bus: Bus,
    publisher: Arc<Publisher>,
    queue: String,
    settings: ConsumerSettings,
    handler: Handler,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let prefetch = settings.prefetch;
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
            let consumer = match tokio::time::timeout(CHANNEL_TIMEOUT, consumer).await {
                Ok(Ok(c)) => c,
                failed => {
                    match failed {
                        Ok(Err(err)) => tracing::warn!(%queue, error = %err, "could not start consuming; retrying"),
                        _ => tracing::warn!(%queue, "the broker did not answer a subscription in time; retrying"),
                    }
                    // Closed, not just left: a subscription the broker makes after this gave up on it would
                    // take deliveries (up to the prefetch) that nobody reads or acks for as long as the channel
                    // lives. The fault suite's partition found payment results held so. Closed in the
                    // background: on a dead connection the close itself would hold up the next subscription.
                    close_later(channel, Duration::ZERO);
                    tokio::time::sleep(Duration::from_millis(100)).await;
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
                    let cancel = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
                    let _ = tokio::time::timeout(CHANNEL_TIMEOUT, cancel).await;
                })
            };
            // The stream ends at its first error or when the connection goes, whichever comes first: a
            // subscription on a dead connection does not always end by itself, and must not keep this
            // consumer from subscribing again on the next one. Deliveries in hand still finish.
            let lost = bus.disconnected();
            consumer
                .take_while(|delivery| {
                    if let Err(err) = delivery {
                        tracing::warn!(%queue, error = %err, "consumer error");
                    }
                    std::future::ready(delivery.is_ok())
                })
                .take_until(lost)
                .for_each_concurrent(usize::from(prefetch), |delivery| {
                    let handler = handler.clone();
                    let publisher = publisher.clone();
                    let queue = queue.clone();
                    let metrics = bus.metrics().clone();
                    async move {
                        // Errors ended the stream above; only deliveries get here.
                        if let Ok(delivery) = delivery {
                            handle_delivery(delivery, &queue, settings, &handler, &publisher, &metrics).await
                        }
                    }
                })
                .await;
            canceller.abort();
            let _ = tokio::time::timeout(CHANNEL_TIMEOUT, channel.close(200, "consumer done".into())).await;
            if *stop.borrow() {
                return;
            }
            tracing::warn!(%queue, "consumer stream ended; waiting for the connection");
        }
    })
}

async fn handle_delivery(
    delivery: Delivery,
    queue: &str,
    settings: ConsumerSettings,
    handler: &Handler,
    publisher: &Publisher,
    metrics: &Metrics,
) {
    let envelope = match Envelope::from_slice(&delivery.data) {
        Ok(e) => e,
        Err(reason) => return dead_letter(delivery, queue, &reason, publisher, metrics).await,
    };
    // The handling joins the sender's trace; messages about an order carry its id as their correlation id.
    let span = tracing::info_span!(
        "consume",
        service = metrics.service(),
        %queue,
        kind = %envelope.kind,
        trace_id = tracing::field::Empty,
        order_id = tracing::field::Empty,
    );
    let traceparent = crate::publisher::delivered_traceparent(&delivery.properties, &envelope);
    ordermesh_telemetry::trace::continue_trace(&span, traceparent.as_deref());
    if let (Some(id), false) = (&envelope.correlation_id, envelope.kind == ordermesh_messages::kinds::REPLY) {
        span.record("order_id", id.as_str());
    }
    handle_decoded(delivery, envelope, queue, settings, handler, publisher, metrics).instrument(span).await
}

async fn handle_decoded(
    delivery: Delivery,
    envelope: Envelope,
    queue: &str,
    settings: ConsumerSettings,
    handler: &Handler,
    publisher: &Publisher,
    metrics: &Metrics,
) {
    let families = metrics.families();
    Metrics::message(&families.consumed, queue, &envelope.kind);
    if delivery.redelivered {
        Metrics::message(&families.redelivered, queue, &envelope.kind);
    }
    if envelope.is_expired() {
        count_expired(metrics, queue, &envelope.kind);
        return ack(&delivery).await;
    }
    let retries = retries_of(&delivery);
    let incoming = Incoming {
        envelope,
        reply_to: delivery.properties.reply_to().as_ref().map(|s| s.as_str().to_owned()),
        redelivered: delivery.redelivered,
        retries,
    };
    let reply_to = incoming.reply_to.clone();
    let kind = incoming.envelope.kind.clone();
    let correlation = incoming.envelope.message_id.to_string();
    // A panicking handler is a bug: the message goes to the dead-letter queue instead of looping forever.
    // One that runs past its bound is stopped (its transaction, if any, rolls back) and its message retried.
    let handling = tokio::spawn((handler)(incoming).in_current_span());
    let stopper = handling.abort_handle();
    let outcome = match tokio::time::timeout(settings.handler_timeout, handling).await {
        Ok(finished) => finished.unwrap_or_else(|e| Outcome::DeadLetter(format!("handler panicked: {e}"))),
        Err(_) => {
            stopper.abort();
            Outcome::Retry(format!("its handling ran past its {:?} bound and was stopped", settings.handler_timeout))
        }
    };
    let max_retries = settings.max_retries;
    match outcome {
        Outcome::Ack => ack(&delivery).await,
        Outcome::Reply(reply) => {
            if let Some(to) = reply_to {
                let reply = Outgoing::to_queue(&to, reply.correlated(correlation));
                let mut sent = publisher.publish(reply.clone()).await;
                // The reply goes through a connection of its own, which may still be coming back after the
                // one that delivered the request did: worth a short wait, as the caller is waiting.
                if matches!(sent, Err(BusError::Unavailable)) && publisher.connected_within(REPLY_PATIENCE).await {
                    sent = publisher.publish(reply).await;
                }
                if let Err(err) = sent {
                    // The work is done and idempotent; a lost reply surfaces as the caller's timeout.
                    tracing::warn!(error = %err, "could not send reply");
                }
            }
            ack(&delivery).await;
        }
        Outcome::Retry(reason) if retries >= max_retries => {
            let reason = format!("gave up after {} attempts: {reason}", retries + 1);
            dead_letter(delivery, queue, &reason, publisher, metrics).await;
        }
        Outcome::Retry(reason) => {
            tracing::warn!(%queue, %reason, retries, "transient failure; retrying");
            Metrics::message(&families.retried, queue, &kind);
            tokio::time::sleep(retry_pause(retries)).await;
            retry(delivery, queue, retries + 1, publisher).await;
        }
        Outcome::DeadLetter(reason) => dead_letter(delivery, queue, &reason, publisher, metrics).await,
    }
}

/// 100 ms, doubling per retry, at most 5 s.
fn retry_pause(retries: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << retries.min(6))).min(Duration::from_secs(5))
}

fn retries_of(delivery: &Delivery) -> u32 {
    let headers = delivery.properties.headers().as_ref();
    match headers.and_then(|h| h.inner().get(RETRIES_HEADER)) {
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

async fn ack(delivery: &Delivery) {
    match tokio::time::timeout(SETTLE_TIMEOUT, delivery.ack(BasicAckOptions::default())).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "ack failed; the message will be redelivered"),
        Err(_) => tracing::warn!("ack not sent in time; the message will be redelivered"),
    }
}

/// Hands the message back to its queue as it is. On a broken connection that happens anyway (unacked
/// messages are requeued), so a nack that cannot be sent in time is let go.
async fn nack(delivery: &Delivery) {
    let nack = delivery.nack(BasicNackOptions { requeue: true, ..Default::default() });
    let _ = tokio::time::timeout(SETTLE_TIMEOUT, nack).await;
}

/// How long a retry keeps trying to hand its message back before giving it back to the broker as it is.
const REQUEUE_PATIENCE: Duration = Duration::from_secs(10);

/// Hands the message back to its queue with the retry count raised (confirmed), then acks the original.
/// A failed publish is tried again for up to [`REQUEUE_PATIENCE`]: while a quorum queue elects a new leader
/// (a broker node lost) publishes are refused for a moment, and nacking at once would spend the message's
/// delivery limit in a second. Without a connection, or past the patience, the original is nacked back as it
/// is: counted, but not lost.
async fn retry(delivery: Delivery, queue: &str, retries: u32, publisher: &Publisher) {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(RETRIES_HEADER.into(), AMQPValue::LongUInt(retries));
    let props: BasicProperties = delivery.properties.clone().with_headers(headers);
    let deadline = tokio::time::Instant::now() + REQUEUE_PATIENCE;
    let mut pause = Duration::from_millis(100);
    loop {
        match publisher.publish_raw("", queue, &delivery.data, props.clone()).await {
            Ok(()) => return ack(&delivery).await,
            // Refused or unconfirmed: the queue is electing a leader, worth waiting for. No connection (the
            // node is gone, or this process is stopping): the delivery comes back by itself anyway.
            Err(err @ (BusError::Nacked | BusError::Timeout)) if tokio::time::Instant::now() + pause < deadline => {
                tracing::debug!(%queue, error = %err, "could not hand the message back yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(err) => {
                tracing::warn!(%queue, error = %err, "could not hand the message back; returning it as it is");
                return nack(&delivery).await;
            }
        }
    }
}

/// Republishes the raw message to the queue's dead-letter exchange with the reason, then acks it.
/// If that publish fails the message goes back to its queue (after a pause) to be dead-lettered on a
/// later delivery: the broker's own dead-lettering would lose the reason.
async fn dead_letter(delivery: Delivery, queue: &str, reason: &str, publisher: &Publisher, metrics: &Metrics) {
    tracing::error!(%queue, %reason, "dead-lettering message");
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
    headers.insert(ORIGIN_HEADER.into(), AMQPValue::LongString(queue.into()));
    let props: BasicProperties = delivery.properties.clone().with_headers(headers);
    match publisher.publish_raw(&Topology::dead_letter_exchange(queue), "", &delivery.data, props).await {
        Ok(()) => {
            let kind = delivery.properties.kind().as_ref().map_or("unknown", |k| k.as_str());
            Metrics::message(&metrics.families().dead_lettered, queue, kind);
            ack(&delivery).await
        }
        Err(err) => {
            tracing::warn!(%queue, error = %err, "could not dead-letter; handing the message back");
            tokio::time::sleep(Duration::from_secs(1)).await;
            nack(&delivery).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_pauses_grow_and_are_capped() {
        assert_eq!(retry_pause(0), Duration::from_millis(100));
        assert_eq!(retry_pause(1), Duration::from_millis(200));
        assert_eq!(retry_pause(30), Duration::from_secs(5));
    }

    fn incoming(payload: serde_json::Value) -> Incoming {
        Incoming { envelope: Envelope::new("cart.get", &payload), reply_to: None, redelivered: false, retries: 0 }
    }

    #[test]
    fn a_payload_that_does_not_decode_is_dead_lettered_with_its_reason() {
        use ordermesh_messages::payloads::GetCart;
        let good = incoming(serde_json::json!({"client_id": "alice"}));
        assert_eq!(good.decode::<GetCart>().expect("decodes").client_id.as_str(), "alice");
        let bad = incoming(serde_json::json!({"client": "alice"}));
        match bad.decode::<GetCart>() {
            Err(Outcome::DeadLetter(reason)) => assert!(reason.contains("invalid cart.get payload"), "{reason}"),
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }

    #[test]
    fn an_early_outcome_and_a_finished_one_are_both_the_delivery_s_outcome() {
        assert!(matches!(Outcome::from(Handled::Ok(Outcome::Ack)), Outcome::Ack));
        let early: Handled = Err(Outcome::unknown_kind("cart.paint"));
        assert!(matches!(Outcome::from(early), Outcome::DeadLetter(r) if r == "unknown message type \"cart.paint\""));
    }
}
