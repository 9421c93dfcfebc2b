//! Looking into a dead-letter queue without taking anything out of it: for the audit and the dashboard.

use lapin::{
    Channel,
    options::{BasicGetOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

use crate::{consumer::REASON_HEADER, topology::Topology};

/// What a dead-letter queue holds, as far as it was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peeked {
    /// Messages in the queue.
    pub depth: u32,
    /// The reason of each message read, oldest first (`None`: a message without one).
    pub reasons: Vec<Option<String>>,
}

/// Reads up to `max` messages of `queue` (a dead-letter queue of `topology`) without acking them, then closes
/// `channel`, which hands every one back to the queue as it was. The channel must not be used for anything else.
pub async fn peek(channel: Channel, queue: &str, max: usize, topology: &Topology) -> lapin::Result<Peeked> {
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let depth = channel.queue_declare(queue.into(), passive, Default::default()).await?.message_count();
    let mut reasons = Vec::new();
    while reasons.len() < max {
        let Some(m) = channel.basic_get(queue.into(), BasicGetOptions::default()).await? else { break };
        reasons.push(reason(m.delivery.properties.headers().as_ref(), topology));
    }
    let _ = channel.close(200, "looked".into()).await;
    Ok(Peeked { depth, reasons })
}

/// Why a message was dead-lettered: the mesh's own reason header when a consumer moved it, else what RabbitMQ
/// recorded in `x-death` when the broker did (a quorum queue's delivery limit, above all).
pub fn reason(headers: Option<&FieldTable>, topology: &Topology) -> Option<String> {
    let headers = headers?.inner();
    if let Some(AMQPValue::LongString(s)) = headers.get(REASON_HEADER) {
        return Some(String::from_utf8_lossy(s.as_bytes()).into_owned());
    }
    let broker = match headers.get("x-first-death-reason") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        _ => first_death_reason(headers.get("x-death"))?,
    };
    Some(match broker.as_str() {
        "delivery_limit" => topology.delivery_limit_reason(),
        "expired" => "dead-lettered by RabbitMQ: it expired in its queue".to_owned(),
        "maxlen" => "dead-lettered by RabbitMQ: its queue was full".to_owned(),
        other => format!("dead-lettered by RabbitMQ: {other}"),
    })
}

/// The `reason` of the first entry of an `x-death` header.
fn first_death_reason(x_death: Option<&AMQPValue>) -> Option<String> {
    let Some(AMQPValue::FieldArray(deaths)) = x_death else { return None };
    let Some(AMQPValue::FieldTable(first)) = deaths.as_slice().first() else { return None };
    match first.inner().get("reason") {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::FieldArray;

    use super::*;

    #[test]
    fn the_mesh_s_own_reason_comes_first_then_the_broker_s() {
        let topology = Topology::default().with_delivery_limit(3);
        let mut own = FieldTable::default();
        own.insert(REASON_HEADER.into(), AMQPValue::LongString("bad payload".into()));
        own.insert("x-first-death-reason".into(), AMQPValue::LongString("rejected".into()));
        assert_eq!(reason(Some(&own), &topology).as_deref(), Some("bad payload"));

        let mut death = FieldTable::default();
        death.insert("reason".into(), AMQPValue::LongString("delivery_limit".into()));
        let mut broker = FieldTable::default();
        broker.insert("x-death".into(), AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])));
        assert_eq!(
            reason(Some(&broker), &topology).as_deref(),
            Some("delivered 4 times without an answer: its consumer crashed or timed out each time")
        );
        assert_eq!(reason(Some(&FieldTable::default()), &topology), None);
        assert_eq!(reason(None, &topology), None);
    }
}
