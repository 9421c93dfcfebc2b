-- Refunds asked of the payment provider and not yet acknowledged by it (`payment.refunded`). A refund is
-- asked for again each time `due_at` passes, so a request the broker loses (RabbitMQ 3.10's quorum queues
-- can lose confirmed messages across a partition) is not money kept.
CREATE TABLE refunds_owed (
    payment_id TEXT PRIMARY KEY,
    order_id   TEXT NOT NULL,
    asked      INT NOT NULL DEFAULT 1,
    asked_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    due_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX refunds_owed_due ON refunds_owed (due_at);
