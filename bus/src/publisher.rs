//! Publishing with publisher confirms on a shared channel, reopened after a reconnect.

use std::time::{Duration, Instant};

use crate::{
    channels::{ChannelCache, Unready},
    connection::{Bus, BusError, CHANNEL_TIMEOUT},
};
use futures::future::try_join_all;
use lapin::{
    BasicProperties, Channel,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};
use ordermesh_messages::{Envelope, EnvelopeHead};
use ordermesh_telemetry::{Metrics, trace};

/// Deadline of one publish, confirms included: a broker that stops confirming must not hang a caller.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes queued together before they are awaited; below `futures`' small-join limit (30), so they are
/// queued in the batch's order.
const PIPELINED: usize = 16;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Exchange name ("" for the default exchange, i.e. straight to a queue).
    pub exchange: String,
    /// Routing key (the queue's name on the default exchange).
    pub routing_key: String,
    /// The message.
    pub envelope: Envelope,
    /// Extra headers (the dead-letter reason, for one).
    pub headers: FieldTable,
}

impl Outgoing {
    /// A message straight to `queue`.
    pub fn to_queue(queue: &str, envelope: Envelope) -> Self {
        Self { exchange: String::new(), routing_key: queue.to_owned(), envelope, headers: FieldTable::default() }
    }
}

/// A message stored already encoded (an outbox row): published as the bytes it holds.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Exchange name ("" for the default exchange).
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// What the properties need of the envelope, read from `body`.
    pub head: EnvelopeHead,
    /// The encoded envelope, sent as it is.
    pub body: Vec<u8>,
}

/// Persistent JSON message properties carrying the envelope's ids.
pub fn properties(envelope: &Envelope) -> BasicProperties {
    properties_of(&envelope.message_id, &envelope.kind, envelope.correlation_id.as_deref())
}

/// The same from the ids themselves, as an envelope's head carries them.
fn properties_of(message_id: &uuid::Uuid, kind: &str, correlation_id: Option<&str>) -> BasicProperties {
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message_id.to_string().into())
        .with_type(kind.into());
    if let Some(id) = correlation_id {
        props = props.with_correlation_id(id.into());
    }
    props
}

/// One message ready for the wire.
struct Encoded<'a> {
    exchange: &'a str,
    routing_key: &'a str,
    kind: &'a str,
    body: std::borrow::Cow<'a, [u8]>,
    properties: BasicProperties,
}

/// Puts the W3C trace context in the message's AMQP headers too (it also travels in the envelope, which the
/// outbox keeps), so tools that read headers see it.
pub fn trace_header(headers: &mut FieldTable, traceparent: Option<&String>) {
    if let Some(value) = traceparent {
        headers.insert(trace::TRACEPARENT.into(), AMQPValue::LongString(value.as_str().into()));
    }
}

/// The trace context a delivery carries: its `traceparent` header, else its envelope's.
pub fn delivered_traceparent(properties: &BasicProperties, envelope: &Envelope) -> Option<String> {
    let header = properties.headers().as_ref().and_then(|h| match h.inner().get(trace::TRACEPARENT) {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    });
    header.or_else(|| envelope.traceparent.clone())
}

/// How long a replaced channel stays open: longer than any publish on it may still wait for its confirm.
const REPLACED_CHANNEL_LINGERS: Duration = Duration::from_secs(15);

/// A confirm-mode channel shared by a process's publishers.
#[derive(Debug)]
pub struct Publisher {
    bus: Bus,
    /// The channel, replaced each [`crate::channels::CHANNEL_LIFETIME`] and after a reconnect.
    channel: ChannelCache<Channel>,
}

impl From<Unready> for BusError {
    fn from(unready: Unready) -> Self {
        match unready {
            Unready::NotConnected => Self::Unavailable,
            Unready::Busy => Self::Timeout,
        }
    }
}

impl Publisher {
    /// A publisher on `bus`; the channel is opened on first use.
    pub fn new(bus: Bus) -> Self {
        Self { bus, channel: ChannelCache::new(REPLACED_CHANNEL_LINGERS) }
    }

    async fn confirm_channel(&self) -> Result<Channel, BusError> {
        self.channel
            .get(&self.bus, async || {
                let channel = self.bus.channel().await?;
                tokio::time::timeout(CHANNEL_TIMEOUT, channel.confirm_select(ConfirmSelectOptions::default()))
                    .await
                    .map_err(|_| BusError::Timeout)??;
                Ok((channel.clone(), channel))
            })
            .await
    }

    /// Publishes one message and waits for the broker's confirm.
    pub async fn publish(&self, message: Outgoing) -> Result<(), BusError> {
        self.publish_all(std::slice::from_ref(&message)).await
    }

    /// Publishes a batch, then awaits all confirms together: one round trip's wait for the lot.
    /// Bounded by [`PUBLISH_TIMEOUT`]; on a timeout some messages may have gone out (receivers are idempotent).
    pub async fn publish_all(&self, messages: &[Outgoing]) -> Result<(), BusError> {
        let traceparent = ordermesh_telemetry::trace::traceparent();
        let encoded = messages.iter().map(|m| {
            let mut headers = m.headers.clone();
            trace_header(&mut headers, m.envelope.traceparent.as_ref().or(traceparent.as_ref()));
            Encoded {
                exchange: &m.exchange,
                routing_key: &m.routing_key,
                kind: &m.envelope.kind,
                body: m.envelope.to_vec_traced(traceparent.clone()).into(),
                properties: properties(&m.envelope).with_headers(headers),
            }
        });
        self.publish_bounded(encoded.collect()).await
    }

    /// Publishes stored messages as their bytes are, with confirms, as [`Publisher::publish_all`] does.
    pub async fn publish_stored(&self, messages: &[Stored]) -> Result<(), BusError> {
        let traceparent = ordermesh_telemetry::trace::traceparent();
        let encoded = messages.iter().map(|m| {
            let mut headers = FieldTable::default();
            trace_header(&mut headers, m.head.traceparent.as_ref().or(traceparent.as_ref()));
            Encoded {
                exchange: &m.exchange,
                routing_key: &m.routing_key,
                kind: &m.head.kind,
                body: m.body.as_slice().into(),
                properties: properties_of(&m.head.message_id, &m.head.kind, m.head.correlation_id.as_deref())
                    .with_headers(headers),
            }
        });
        self.publish_bounded(encoded.collect()).await
    }

    async fn publish_bounded(&self, messages: Vec<Encoded<'_>>) -> Result<(), BusError> {
        if messages.is_empty() {
            return Ok(());
        }
        let count = messages.len();
        match tokio::time::timeout(PUBLISH_TIMEOUT, self.publish_unbounded(messages)).await {
            Ok(result) => result,
            Err(_) => {
                self.drop_channel();
                tracing::warn!(count, "publish not confirmed within {PUBLISH_TIMEOUT:?}");
                Err(BusError::Timeout)
            }
        }
    }

    async fn publish_unbounded(&self, messages: Vec<Encoded<'_>>) -> Result<(), BusError> {
        let channel = self.confirm_channel().await?;
        // Each publish resolves only once lapin's I/O thread has written it. Awaiting them one by one would
        // cost a round trip to that thread per message, so a batch's frames are all queued (in order: a
        // small `try_join_all` polls its futures in sequence) before any is awaited.
        let mut confirms = Vec::with_capacity(messages.len());
        for chunk in messages.chunks(PIPELINED) {
            let publishes = chunk.iter().map(|m| {
                channel.basic_publish(
                    m.exchange.into(),
                    m.routing_key.into(),
                    BasicPublishOptions::default(),
                    &m.body,
                    m.properties.clone(),
                )
            });
            confirms.extend(try_join_all(publishes).await.map_err(|e| self.forget(e))?);
        }
        let confirmations = try_join_all(confirms).await.map_err(|e| self.forget(e))?;
        if confirmations.iter().any(|c| c.is_nack()) {
            return Err(BusError::Nacked);
        }
        let published = &self.bus.metrics().families().published;
        for m in &messages {
            let to = if m.exchange.is_empty() { m.routing_key } else { m.exchange };
            Metrics::message(published, to, m.kind);
        }
        Ok(())
    }

    /// Publishes bytes as they are (used to move an undecodable message to a dead-letter queue).
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BusError> {
        let publish = async {
            let channel = self.confirm_channel().await?;
            let confirm = channel
                .basic_publish(exchange.into(), routing_key.into(), BasicPublishOptions::default(), body, properties)
                .await
                .map_err(|e| self.forget(e))?
                .await
                .map_err(|e| self.forget(e))?;
            if confirm.is_nack() { Err(BusError::Nacked) } else { Ok(()) }
        };
        tokio::time::timeout(PUBLISH_TIMEOUT, publish).await.unwrap_or_else(|_| {
            self.drop_channel();
            Err(BusError::Timeout)
        })
    }

    fn drop_channel(&self) {
        self.channel.close_now();
    }

    /// Waits up to `patience` for the connection to be up: for a caller with something worth a short wait
    /// (a reply its caller is still waiting for) when the connection is being made again.
    pub async fn connected_within(&self, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        while !self.bus.is_connected() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// A failed channel is dropped so the next publish opens a fresh one.
    fn forget(&self, err: lapin::Error) -> BusError {
        self.drop_channel();
        tracing::warn!(error = %err, "publish failed");
        BusError::Unavailable
    }
}
