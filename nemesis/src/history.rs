//! The history the shoppers record: every operation they sent, every attempt at it (with its gateway, time
//! and answer) and how it ended. Times are milliseconds from the start of the run.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

/// What a shopper asked for.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    SetEmail { email: String },
    Add { product: String, quantity: i64 },
    Remove { product: String },
    Checkout,
    ReadOrder { order_id: String },
}

/// One try at a request.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub sent_ms: u64,
    pub answered_ms: u64,
    pub gateway: usize,
    /// The HTTP status, or none when no answer came (`error` says why).
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// A 2xx: the request was applied (or had been, for a retry).
    Done { status: u16, body: Value },
    /// A 4xx other than 429: the request was judged and changed nothing.
    Refused { status: u16, body: Value },
    /// Only 5xx, 429 or no answer until the shopper gave up: it may or may not have been applied.
    GaveUp,
}

#[derive(Debug, Clone, Serialize)]
pub struct Op {
    pub id: u64,
    pub shopper: usize,
    pub client: String,
    pub channel: String,
    pub request: Request,
    pub key: Option<String>,
    /// Sent while the same client's checkout was in flight (a cart changed under its checkout).
    pub concurrent: bool,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub attempts: Vec<Attempt>,
    pub answer: Answer,
}

impl Op {
    pub fn done(&self) -> Option<&Value> {
        match &self.answer {
            Answer::Done { body, .. } => Some(body),
            _ => None,
        }
    }
}

/// The shared record, appended to as operations end.
#[derive(Debug, Clone, Default)]
pub struct History(Arc<Mutex<Vec<Op>>>);

impl History {
    pub fn push(&self, op: Op) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(op);
    }

    /// Every operation, in the order they started.
    pub fn ops(&self) -> Vec<Op> {
        let mut ops = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        ops.sort_by_key(|o| (o.started_ms, o.id));
        ops
    }

    /// One JSON object per line.
    pub fn to_jsonl(ops: &[Op]) -> String {
        ops.iter().filter_map(|o| serde_json::to_string(o).ok()).map(|l| l + "\n").collect()
    }
}
