//! Every exchange and queue name, and their idempotent declaration.
//!
//! Work queues are durable, fed through the default exchange, and each has its own dead-letter
//! exchange `<queue>.dlx` (fanout) and queue `<queue>.dlq`. Order events go to the topic exchange
//! `ordermesh.order-events` with the event type as routing key. A namespace prefixes every name so
//! that tests (or tenants) can run side by side on one broker.

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

/// Names and declaration of ordermesh's RabbitMQ topology.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// Prefix of every name (`"<namespace>.cart-manager.jobs"`); empty in production.
    namespace: String,
    /// When set, queues expire after this long unused and exchanges auto-delete, so test runs leave nothing behind.
    expires: Option<Duration>,
}

impl Topology {
    /// The production topology: plain names, nothing expires.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), expires: None }
    }

    /// A throwaway topology for tests: everything is removed by the broker once unused for `expires`.
    pub fn ephemeral(namespace: impl Into<String>, expires: Duration) -> Self {
        Self { namespace: namespace.into(), expires: Some(expires) }
    }

    /// The namespace ("" in production).
    pub fn namespace(&self) -> &str {
        &self.namespace
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

    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if let Some(expires) = self.expires {
            let ms = i64::try_from(expires.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
        }
        args
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
            channel.queue_declare(dlq.as_str().into(), QueueDeclareOptions::durable(), self.queue_args()).await?;
            channel
                .queue_bind(
                    dlq.as_str().into(),
                    dlx.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let mut args = self.queue_args();
            args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(dlx.as_str().into()));
            channel.queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args).await?;
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
