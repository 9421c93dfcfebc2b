//! Looking into a dead-letter queue without taking anything out of it: for the audit and the dashboard.

use lapin::{
    Channel,
    options::{BasicGetOptions, QueueDeclareOptions},
    types::AMQPValue,
};

use crate::consumer::REASON_HEADER;

/// What a dead-letter queue holds, as far as it was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peeked {
    /// Messages in the queue.
    pub depth: u32,
    /// The reason of each message read, oldest first (`None`: a message without one).
    pub reasons: Vec<Option<String>>,
}

/// Reads up to `max` messages of `queue` without acking them, then closes `channel`, which hands every
/// one back to the queue as it was. The channel must not be used for anything else.
pub async fn peek(channel: Channel, queue: &str, max: usize) -> lapin::Result<Peeked> {
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let depth = channel.queue_declare(queue.into(), passive, Default::default()).await?.message_count();
    let mut reasons = Vec::new();
    while reasons.len() < max {
        let Some(m) = channel.basic_get(queue.into(), BasicGetOptions::default()).await? else { break };
        let reason = m.delivery.properties.headers().as_ref().and_then(|h| h.inner().get(REASON_HEADER).cloned());
        reasons.push(match reason {
            Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            _ => None,
        });
    }
    let _ = channel.close(200, "looked".into()).await;
    Ok(Peeked { depth, reasons })
}
