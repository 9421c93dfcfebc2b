//! Request/reply over RabbitMQ's direct reply-to: any number of callers and workers side by side,
//! each reply routed back to the channel that asked by its correlation id.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use futures::{StreamExt, future::BoxFuture};
use lapin::{
    Channel,
    options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use ordermesh_messages::Envelope;
use tokio::sync::oneshot;

use crate::{
    channels::{ChannelCache, Unready, close_later},
    connection::{Bus, CHANNEL_TIMEOUT},
    publisher::{properties, trace_header},
};

/// RabbitMQ's pseudo-queue for direct replies.
const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Why a call got no reply.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum RpcError {
    /// RabbitMQ is unreachable, or refused the request.
    #[error("RabbitMQ is unreachable")]
    Unavailable,
    /// The request was queued but nobody answered before the deadline.
    #[error("no reply within the deadline")]
    Timeout,
}

type Pending = Arc<std::sync::Mutex<HashMap<String, oneshot::Sender<Envelope>>>>;

#[derive(Clone)]
struct ReplyChannel {
    channel: Channel,
    /// Calls waiting on this channel; dropped with it, so they fail fast when it dies.
    pending: Pending,
}

/// After this many calls in a row whose requests the broker confirmed went unanswered, requests go out on a
/// fresh channel: RabbitMQ 3.10's quorum queues can drop every later message of a channel that lost one
/// across a partition (rabbitmq-server#14589), and a new channel is a new publisher to them. A worker that is
/// merely down costs a channel a second at most.
const SILENT_CALLS: u32 = 3;
/// How long a replaced reply channel stays open, so calls in flight on it still get their replies.
const REPLACED_CHANNEL_LINGERS: Duration = Duration::from_secs(30);

/// What a caller of the workers needs: a request sent to a queue and its reply awaited until a deadline. A
/// trait, so that the gateway's router is tested with scripted replies and no broker; [`RpcClient`] is the one
/// the services use.
pub trait Requests: Send + Sync + std::fmt::Debug {
    /// Sends `request` to `queue` and waits at most `deadline` for the reply.
    fn call<'a>(
        &'a self,
        queue: &'a str,
        request: Envelope,
        deadline: Duration,
    ) -> BoxFuture<'a, Result<Envelope, RpcError>>;
}

impl Requests for RpcClient {
    fn call<'a>(
        &'a self,
        queue: &'a str,
        request: Envelope,
        deadline: Duration,
    ) -> BoxFuture<'a, Result<Envelope, RpcError>> {
        Box::pin(RpcClient::call(self, queue, request, deadline))
    }
}

/// Sends requests and waits for their replies; cheap to share behind an `Arc`.
pub struct RpcClient {
    bus: Bus,
    /// The reply channel and the calls waiting on it, replaced each [`crate::channels::CHANNEL_LIFETIME`],
    /// after a reconnect and when its calls go unanswered.
    channel: ChannelCache<ReplyChannel>,
    /// Calls in a row whose confirmed request got no reply.
    silent: AtomicU32,
}

/// The part of a caller's deadline kept back from the worker, so that a worker which commits at the
/// very end of its time still does so before the caller answers 504: a 504 then means "not applied
/// unless its reply was lost", and a retry with the same idempotency key is safe either way.
pub fn worker_deadline(deadline: Duration) -> Duration {
    let margin = (deadline / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    deadline.saturating_sub(margin)
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient").field("bus", &self.bus).finish()
    }
}

impl From<Unready> for RpcError {
    fn from(_: Unready) -> Self {
        Self::Unavailable
    }
}

impl RpcClient {
    /// A client on `bus`; its reply channel is opened on first use and after every reconnect.
    pub fn new(bus: Bus) -> Self {
        Self { bus, channel: ChannelCache::new(REPLACED_CHANNEL_LINGERS), silent: AtomicU32::new(0) }
    }

    /// New calls go out on a fresh channel; the old one is closed once its calls can no longer be waiting.
    /// At most one a second, so that a worker that is down does not pile up lingering channels.
    fn replace_channel(&self) {
        if self.channel.retire_if_older_than(Duration::from_secs(1)) {
            tracing::warn!(calls = SILENT_CALLS, "confirmed requests went unanswered; replying channel replaced");
        }
    }

    async fn reply_channel(&self) -> Result<ReplyChannel, RpcError> {
        self.channel.get(&self.bus, async || self.open_reply_channel().await).await
    }

    /// A new channel that publishes with confirms and consumes direct replies, each routed to its call.
    async fn open_reply_channel(&self) -> Result<(Channel, ReplyChannel), RpcError> {
        let channel = self.bus.channel().await.map_err(|_| RpcError::Unavailable)?;
        let setup = async {
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            channel
                .basic_consume(
                    REPLY_TO.into(),
                    "".into(),
                    BasicConsumeOptions { no_ack: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await
        };
        let mut replies = match tokio::time::timeout(CHANNEL_TIMEOUT, setup).await {
            Ok(Ok(replies)) => replies,
            failed => {
                match failed {
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not open the reply channel"),
                    _ => tracing::warn!("opening the reply channel timed out"),
                }
                // Closed, not left open with a subscription nobody reads.
                close_later(channel, Duration::ZERO);
                return Err(RpcError::Unavailable);
            }
        };
        let pending: Pending = Arc::default();
        let routes = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = replies.next().await {
                let Some(id) = delivery.properties.correlation_id().as_ref().map(|c| c.as_str().to_owned()) else {
                    continue;
                };
                let waiter = routes.lock().expect("pending map lock").remove(&id);
                match (waiter, Envelope::from_slice(&delivery.data)) {
                    (Some(tx), Ok(reply)) => {
                        let _ = tx.send(reply);
                    }
                    (Some(_), Err(reason)) => tracing::warn!(%reason, "undecodable reply"),
                    // The caller gave up already (its deadline passed).
                    (None, _) => tracing::debug!(correlation_id = %id, "late reply dropped"),
                }
            }
            // The channel is gone: fail the calls still waiting on it instead of letting them time out.
            routes.lock().expect("pending map lock").clear();
        });
        Ok((channel.clone(), ReplyChannel { channel, pending }))
    }

    /// Sends `request` to `queue` and waits at most `deadline` for the reply.
    ///
    /// The request carries its deadline (less a margin, see [`worker_deadline`]): a worker that takes
    /// it up later drops it unanswered instead of acting for a caller that has already been told 504.
    pub async fn call(&self, queue: &str, request: Envelope, deadline: Duration) -> Result<Envelope, RpcError> {
        let until = tokio::time::Instant::now() + deadline;
        let worker_until =
            chrono::Utc::now() + chrono::Duration::from_std(worker_deadline(deadline)).unwrap_or(chrono::Duration::MAX);
        let request = request.with_deadline(worker_until);
        let rc = tokio::time::timeout_at(until, self.reply_channel()).await.map_err(|_| RpcError::Timeout)??;
        let id = request.message_id.to_string();
        let (tx, rx) = oneshot::channel();
        rc.pending.lock().expect("pending map lock").insert(id.clone(), tx);
        let forget = Forget { pending: &rc.pending, id: &id };

        let traceparent = ordermesh_telemetry::trace::traceparent();
        let mut headers = FieldTable::default();
        trace_header(&mut headers, traceparent.as_ref());
        // Transient: a request lives only as long as its caller waits (its deadline rides in the envelope),
        // so writing it to disk buys nothing. One lost with the broker is a 504 its caller retries under the
        // same Idempotency-Key, exactly as when a persistent request's reply is lost.
        let props = properties(&request)
            .with_delivery_mode(1)
            .with_reply_to(REPLY_TO.into())
            .with_correlation_id(id.as_str().into())
            .with_headers(headers);
        let body = request.to_vec_traced(traceparent);
        let publish = async {
            rc.channel.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &body, props).await?.await
        };
        match tokio::time::timeout_at(until, publish).await {
            Err(_) => {
                // The broker did not confirm within the whole deadline: the channel is suspect.
                self.channel.retire();
                return Err(RpcError::Timeout);
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "request publish failed");
                self.channel.retire();
                return Err(RpcError::Unavailable);
            }
            Ok(Ok(confirm)) if confirm.is_nack() => return Err(RpcError::Unavailable),
            Ok(Ok(_)) => {
                ordermesh_telemetry::Metrics::message(&self.bus.metrics().families().published, queue, &request.kind)
            }
        }
        let result = match tokio::time::timeout_at(until, rx).await {
            Ok(Ok(reply)) => {
                self.silent.store(0, Ordering::Relaxed);
                Ok(reply)
            }
            Ok(Err(_)) => Err(RpcError::Unavailable),
            Err(_) => {
                if self.silent.fetch_add(1, Ordering::Relaxed) + 1 >= SILENT_CALLS {
                    self.silent.store(0, Ordering::Relaxed);
                    self.replace_channel();
                }
                Err(RpcError::Timeout)
            }
        };
        drop(forget);
        result
    }
}

/// Removes a call's entry however the call ends, so abandoned calls do not pile up.
struct Forget<'a> {
    pending: &'a Pending,
    id: &'a str,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.pending.lock() {
            map.remove(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_get_the_deadline_less_a_bounded_margin() {
        assert_eq!(worker_deadline(Duration::from_secs(5)), Duration::from_millis(4500));
        assert_eq!(worker_deadline(Duration::from_millis(100)), Duration::from_millis(50), "at least 50 ms kept back");
        assert_eq!(worker_deadline(Duration::from_secs(60)), Duration::from_secs(59), "at most 1 s kept back");
    }
}
