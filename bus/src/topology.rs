//! Every exchange and queue name, and their idempotent declaration.
//!
//! Work queues are durable, fed through the default exchange, and each has its own dead-letter
//! exchange `<queue>.dlx` (fanout) and queue `<queue>.dlq`. Order events go to the topic exchange
//! `ordermesh.order-events` with the event type as routing key. A namespace prefixes every name so
//! that tests (or tenants) can run side by side on one broker.
//!
//! Queues are quorum queues (Raft-replicated across a cluster's nodes) unless configured classic. A quorum
//! work queue counts deliveries: one returned unanswered more than its delivery limit (its consumer crashed
//! or timed out each time) is dead-lettered by the broker, at least once, to the same dead-letter queue.

use std::time::Duration;

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

/// The order events the notifier's queue is bound to (routing keys on the order-events exchange).
pub const NOTIFIED_EVENTS: &[&str] = &[
    ordermesh_messages::kinds::events::ORDER_CONFIRMED,
    ordermesh_messages::kinds::events::ORDER_PAYMENT_DECLINED,
    ordermesh_messages::kinds::events::ORDER_FAILED,
];

pub use ordermesh_config::DEFAULT_DELIVERY_LIMIT;

/// The command that turns an existing deployment's classic queues into quorum queues.
pub const MIGRATE_COMMAND: &str = "ordermesh queues migrate";

pub use ordermesh_config::QueueType;

/// Names and declaration of ordermesh's RabbitMQ topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Prefix of every name (`"<namespace>.cart-manager.jobs"`); empty in production.
    namespace: String,
    /// When set, queues expire after this long unused and exchanges auto-delete, so test runs leave nothing behind.
    expires: Option<Duration>,
    /// Quorum in production; classic for a single-node broker that wants the last bit of speed.
    queue_type: QueueType,
    /// Redeliveries of a message that came back unanswered before the broker dead-letters it (`x-delivery-limit`).
    delivery_limit: u32,
}

impl Default for Topology {
    fn default() -> Self {
        Self::new("")
    }
}

impl Topology {
    /// The production topology: plain names, nothing expires, quorum queues.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            expires: None,
            queue_type: QueueType::Quorum,
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
        }
    }

    /// The topology the shared settings describe: their namespace, queue type and delivery limit.
    pub fn from_settings(shared: &ordermesh_config::SharedSettings) -> Self {
        Self::new(shared.namespace.clone())
            .with_queue_type(shared.queue_type)
            .with_delivery_limit(shared.delivery_limit)
    }

    /// A throwaway topology for tests: everything is removed by the broker once unused for `expires`.
    pub fn ephemeral(namespace: impl Into<String>, expires: Duration) -> Self {
        Self { expires: Some(expires), ..Self::new(namespace) }
    }

    /// The same names with queues of `queue_type`.
    pub fn with_queue_type(self, queue_type: QueueType) -> Self {
        Self { queue_type, ..self }
    }

    /// The same names with quorum work queues dead-lettering a message that came back unanswered `limit` + 1
    /// times (`x-delivery-limit`).
    pub fn with_delivery_limit(self, limit: u32) -> Self {
        Self { delivery_limit: limit, ..self }
    }

    /// The namespace ("" in production).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The kind of the durable queues.
    pub fn queue_type(&self) -> QueueType {
        self.queue_type
    }

    fn name(&self, base: &str) -> String {
        if self.namespace.is_empty() { base.to_owned() } else { format!("{}.{base}", self.namespace) }
    }

    /// cart-manager's requests from the gateway.
    pub fn cart_jobs(&self) -> String {
        self.name("cart-manager.jobs")
    }

    /// New orders for checkout-manager's saga.
    pub fn checkout_jobs(&self) -> String {
        self.name("checkout-manager.jobs")
    }

    /// Order reads from the gateway, apart from saga work so a backlog never delays a read.
    pub fn checkout_queries(&self) -> String {
        self.name("checkout-manager.queries")
    }

    /// Payment outcomes for the saga.
    pub fn payment_results(&self) -> String {
        self.name("checkout-manager.payment-results")
    }

    /// Charge and refund requests for the payment provider.
    pub fn payment_requests(&self) -> String {
        self.name("payment-gateway.requests")
    }

    /// Profile requests from the gateway for the notifier.
    pub fn notifier_jobs(&self) -> String {
        self.name("notifier.jobs")
    }

    /// The notifier's subscription to the order events it emails about ([`NOTIFIED_EVENTS`]).
    pub fn notifier_events(&self) -> String {
        self.name("notifier.order-events")
    }

    /// The topic exchange of order events.
    pub fn order_events(&self) -> String {
        self.name("ordermesh.order-events")
    }

    /// Every work queue, in declaration order.
    pub fn work_queues(&self) -> [String; 7] {
        [
            self.cart_jobs(),
            self.checkout_jobs(),
            self.checkout_queries(),
            self.payment_results(),
            self.payment_requests(),
            self.notifier_jobs(),
            self.notifier_events(),
        ]
    }

    /// The dead-letter exchange of a work queue.
    pub fn dead_letter_exchange(queue: &str) -> String {
        format!("{queue}.dlx")
    }

    /// The dead-letter queue of a work queue.
    pub fn dead_letter_queue(queue: &str) -> String {
        format!("{queue}.dlq")
    }

    /// Arguments every durable queue of this topology is declared with (a dead-letter queue's whole set).
    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if let Some(expires) = self.expires {
            let ms = i64::try_from(expires.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
        }
        if self.queue_type == QueueType::Quorum {
            args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        }
        args
    }

    /// Arguments of a work queue: dead-lettering to its own exchange and, for quorum, the delivery limit.
    /// Broker-side dead-lettering is at-least-once (it needs `reject-publish` overflow), so a message the
    /// broker gives up on is never dropped between the work queue and its dead-letter queue.
    pub fn work_queue_args(&self, queue: &str) -> FieldTable {
        let mut args = self.queue_args();
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(Self::dead_letter_exchange(queue).into()));
        if self.queue_type == QueueType::Quorum {
            args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(self.delivery_limit)));
            args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
            args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        }
        args
    }

    /// Arguments of a dead-letter queue. It has no delivery limit: what an operator must read is never
    /// dropped for having been looked at.
    pub fn dead_letter_queue_args(&self) -> FieldTable {
        self.queue_args()
    }

    /// The reason a message dead-lettered by the broker for its delivery limit is shown with.
    pub fn delivery_limit_reason(&self) -> String {
        delivery_limit_reason(self.delivery_limit)
    }

    fn exchange_options(&self) -> ExchangeDeclareOptions {
        ExchangeDeclareOptions { durable: true, auto_delete: self.expires.is_some(), ..Default::default() }
    }

    /// Declares everything; safe to repeat, and every service does at each (re)connect, so
    /// whoever starts first makes the queues and no message is published into the void.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        channel
            .exchange_declare(
                self.order_events().as_str().into(),
                ExchangeKind::Topic,
                self.exchange_options(),
                FieldTable::default(),
            )
            .await?;
        for queue in self.work_queues() {
            let dlx = Self::dead_letter_exchange(&queue);
            let dlq = Self::dead_letter_queue(&queue);
            channel
                .exchange_declare(
                    dlx.as_str().into(),
                    ExchangeKind::Fanout,
                    self.exchange_options(),
                    FieldTable::default(),
                )
                .await?;
            declare_queue(channel, &dlq, self.dead_letter_queue_args()).await?;
            channel
                .queue_bind(
                    dlq.as_str().into(),
                    dlx.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            declare_queue(channel, &queue, self.work_queue_args(&queue)).await?;
        }
        // Bound by whoever declares first, so the events of orders placed before the notifier's first start
        // are kept for it too.
        for event in NOTIFIED_EVENTS {
            channel
                .queue_bind(
                    self.notifier_events().as_str().into(),
                    self.order_events().as_str().into(),
                    (*event).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }
}

/// Declares a durable queue; a queue that exists with other arguments (a classic queue where a quorum one is
/// expected) is refused by the broker with PRECONDITION_FAILED (see [`is_mismatch`]).
async fn declare_queue(channel: &Channel, queue: &str, args: FieldTable) -> lapin::Result<()> {
    channel.queue_declare(queue.into(), QueueDeclareOptions::durable(), args).await.map(drop)
}

/// The reason shown for a message the broker dead-lettered under `x-delivery-limit = limit`: it was delivered
/// `limit + 1` times.
pub fn delivery_limit_reason(limit: u32) -> String {
    format!(
        "delivered {} times without an answer: its consumer crashed or timed out each time",
        limit.saturating_add(1)
    )
}

/// Whether a failed declaration means that a queue exists with other arguments (a classic queue under a
/// quorum queue's name, or the other way round): redeclaring will never succeed, so the process must stop
/// and say what fixes it rather than retry for ever.
pub fn is_mismatch(err: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    // A declaration's only PRECONDITION_FAILED is "inequivalent arg": the queue exists with other arguments.
    matches!(err.kind(), lapin::ErrorKind::ProtocolError(e)
        if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

/// The sentence a service stops with when it meets queues of another kind than it is configured for.
pub fn mismatch_sentence(err: &lapin::Error, wanted: QueueType) -> String {
    format!(
        "RabbitMQ holds ordermesh's queues with other arguments than this service declares ({wanted} queues): {err}. \
         Stop every ordermesh service, run `{MIGRATE_COMMAND}` (it moves each queue's messages into its \
         replacement, none lost), then start them again; or set AMQP_QUEUE_TYPE to the kind the broker holds"
    )
}

impl Topology {
    /// Deletes every queue and exchange of this topology (test teardown).
    pub async fn delete(&self, channel: &Channel) -> lapin::Result<()> {
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        for queue in self.work_queues() {
            for q in [Self::dead_letter_queue(&queue), queue.clone()] {
                channel.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await?;
            }
            channel
                .exchange_delete(Self::dead_letter_exchange(&queue).as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        channel.exchange_delete(self.order_events().as_str().into(), ExchangeDeleteOptions::default()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention() {
        let prod = Topology::default();
        assert_eq!(prod.cart_jobs(), "cart-manager.jobs");
        assert_eq!(Topology::dead_letter_queue(&prod.cart_jobs()), "cart-manager.jobs.dlq");
        assert_eq!(prod.order_events(), "ordermesh.order-events");
        let test = Topology::ephemeral("t1", Duration::from_secs(60));
        assert_eq!(test.checkout_jobs(), "t1.checkout-manager.jobs");
    }
}
