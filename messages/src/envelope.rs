//! The one envelope every message travels in, and the error shape of every reply.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// Version of the envelope layout; a consumer dead-letters a version it does not know.
pub const ENVELOPE_VERSION: u16 = 1;

/// `{v, message_id, type, correlation_id, time, payload}`: small, self-describing, versioned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    /// Envelope version, [`ENVELOPE_VERSION`].
    pub v: u16,
    /// Unique per message; handlers use it to recognise a redelivery.
    pub message_id: Uuid,
    /// The message type, see [`crate::kinds`].
    #[serde(rename = "type")]
    pub kind: String,
    /// Ties a reply, or every message of one order, to what caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// When the message was made.
    pub time: DateTime<Utc>,
    /// For requests: after this instant the sender no longer waits for the answer, so a worker must not
    /// act on it (checked again inside the transaction that records the effect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// The W3C trace context of the span that sent it, so the receiver's work joins the same trace (one trace
    /// per order, across services and through the outbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The type-specific body.
    pub payload: serde_json::Value,
}

/// The largest message a service decodes: 1 MiB. The largest the mesh sends (an order of 500 lines, its final
/// event with the whole timeline) is tens of kilobytes; a larger one is refused unread, so whoever can publish
/// cannot make a consumer parse or hold without bound (the consumer dead-letters it with this reason).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

fn within_bound(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "a message of {} bytes is over the {MAX_MESSAGE_BYTES}-byte bound; not decoded",
            bytes.len()
        ));
    }
    Ok(())
}

impl Envelope {
    /// Wraps a payload with a fresh message id.
    pub fn new(kind: &str, payload: &impl Serialize) -> Self {
        Self {
            v: ENVELOPE_VERSION,
            message_id: Uuid::now_v7(),
            kind: kind.to_owned(),
            correlation_id: None,
            time: Utc::now(),
            deadline: None,
            traceparent: None,
            payload: serde_json::to_value(payload).expect("payloads are plain data and always serialise"),
        }
    }

    /// The same with a correlation id.
    pub fn correlated(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = Some(correlation_id.into());
        self
    }

    /// The same with a deadline.
    pub fn with_deadline(mut self, deadline: DateTime<Utc>) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Whether the sender has stopped waiting for this request.
    pub fn is_expired(&self) -> bool {
        self.deadline.is_some_and(|d| d <= Utc::now())
    }

    /// Decodes an envelope from bytes, checking its size (never more than [`MAX_MESSAGE_BYTES`] is parsed) and
    /// its version.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, String> {
        within_bound(bytes)?;
        let envelope: Self = serde_json::from_slice(bytes).map_err(|e| format!("not a valid envelope: {e}"))?;
        if envelope.v != ENVELOPE_VERSION {
            return Err(format!("unsupported envelope version {}", envelope.v));
        }
        Ok(envelope)
    }

    /// Encodes the envelope.
    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serialises")
    }

    /// Encodes the envelope carrying `traceparent`, unless it already carries one of its own.
    pub fn to_vec_traced(&self, traceparent: Option<String>) -> Vec<u8> {
        match (&self.traceparent, traceparent) {
            (None, Some(traceparent)) => Self { traceparent: Some(traceparent), ..self.clone() }.to_vec(),
            _ => self.to_vec(),
        }
    }

    /// Decodes the payload as `T`.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, String> {
        T::deserialize(&self.payload).map_err(|e| format!("invalid {} payload: {e}", self.kind))
    }
}

/// What publishing an encoded envelope needs of it (its ids, type and trace context), read without building
/// its payload: the outbox relay sends the bytes it stored as they are, instead of decoding and encoding them
/// again.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EnvelopeHead {
    /// Envelope version, [`ENVELOPE_VERSION`].
    pub v: u16,
    /// As [`Envelope::message_id`].
    pub message_id: Uuid,
    /// As [`Envelope::kind`].
    #[serde(rename = "type")]
    pub kind: String,
    /// As [`Envelope::correlation_id`].
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// As [`Envelope::traceparent`].
    #[serde(default)]
    pub traceparent: Option<String>,
    /// Required as in [`Envelope`], so bytes this accepts are bytes [`Envelope::from_slice`] accepts.
    #[serde(rename = "time")]
    _time: DateTime<Utc>,
    /// Parsed (so the bytes are whole JSON) but not kept.
    #[serde(rename = "payload")]
    _payload: serde::de::IgnoredAny,
}

impl EnvelopeHead {
    /// Reads the head of encoded envelope bytes, checking its version, as [`Envelope::from_slice`] does.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, String> {
        within_bound(bytes)?;
        let head: Self = serde_json::from_slice(bytes).map_err(|e| format!("not a valid envelope: {e}"))?;
        if head.v != ENVELOPE_VERSION {
            return Err(format!("unsupported envelope version {}", head.v));
        }
        Ok(head)
    }
}

/// Why a request failed, in terms every caller can map (the gateway maps them to HTTP statuses).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed.
    InvalidInput,
    /// Something it names does not exist.
    NotFound,
    /// It conflicts with the current state (not enough stock, an empty cart).
    Conflict,
    /// A dependency did not answer; retrying later may work.
    Unavailable,
    /// The idempotency key was already used for a different request.
    KeyReused,
    /// A bug or unexpected failure.
    Internal,
}

/// The error half of a reply: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ReplyError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// A sentence for a person.
    pub message: String,
}

impl ReplyError {
    /// Builds an error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// A reply payload: serialised as `{"Ok": body}` or `{"Err": {"code", "message"}}`.
pub type Reply<T> = Result<T, ReplyError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_over_the_bound_is_refused_unread() {
        let big = Envelope::new("cart.get", &serde_json::json!({"pad": "x".repeat(MAX_MESSAGE_BYTES)})).to_vec();
        let reason = Envelope::from_slice(&big).unwrap_err();
        assert!(reason.contains("over the 1048576-byte bound"), "{reason}");
        assert!(EnvelopeHead::from_slice(&big).is_err());
        let small = Envelope::new("cart.get", &serde_json::json!({"pad": "x".repeat(1000)})).to_vec();
        assert!(Envelope::from_slice(&small).is_ok());
    }

    #[test]
    fn envelopes_round_trip_and_check_their_version() {
        let e = Envelope::new("cart.get", &serde_json::json!({"client_id": "c"})).correlated("abc");
        let back = Envelope::from_slice(&e.to_vec()).unwrap();
        assert_eq!(back, e);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "cart.get");

        let mut future = json.clone();
        future["v"] = 2.into();
        assert!(Envelope::from_slice(&serde_json::to_vec(&future).unwrap()).unwrap_err().contains("version"));
        assert!(Envelope::from_slice(b"{").is_err());
    }

    #[test]
    fn a_head_reads_what_publishing_needs_and_accepts_what_an_envelope_accepts() {
        let mut e =
            Envelope::new("order.created", &serde_json::json!({"order_id": "o", "lines": [1, 2]})).correlated("o");
        e.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        let head = EnvelopeHead::from_slice(&e.to_vec()).unwrap();
        assert_eq!((head.message_id, head.kind.as_str()), (e.message_id, "order.created"));
        assert_eq!((head.correlation_id, head.traceparent), (e.correlation_id.clone(), e.traceparent.clone()));

        let json = serde_json::to_value(&e).unwrap();
        let mut future = json.clone();
        future["v"] = 2.into();
        let mut no_payload = json.clone();
        no_payload.as_object_mut().unwrap().remove("payload");
        let mut no_time = json.clone();
        no_time.as_object_mut().unwrap().remove("time");
        for bad in [
            serde_json::to_vec(&future).unwrap(),
            serde_json::to_vec(&no_payload).unwrap(),
            serde_json::to_vec(&no_time).unwrap(),
            b"{".to_vec(),
            b"garbage".to_vec(),
        ] {
            assert!(EnvelopeHead::from_slice(&bad).is_err() && Envelope::from_slice(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_number_beyond_any_integer_reads_back_as_it_was_written() {
        // Found by the `envelope` fuzz target: without exact float parsing, a number too large for an integer
        // came back from a decode and an encode one unit in the last place off.
        let raw: &[u8] = include_bytes!("../../fuzz/corpus/envelope/huge-integer-quantity");
        let envelope = Envelope::from_slice(raw).expect("an envelope");
        assert_eq!(Envelope::from_slice(&envelope.to_vec()).expect("re-encoded"), envelope);
    }

    #[test]
    fn replies_have_one_shape() {
        let err: Reply<u8> = Err(ReplyError::new(ErrorCode::NotFound, "no such product"));
        let json = serde_json::to_value(&err).unwrap();
        assert_eq!(json, serde_json::json!({"Err": {"code": "not_found", "message": "no such product"}}));
    }
}
