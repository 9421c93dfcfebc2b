-- When cart-manager next asks checkout-manager whether it has taken in this checkout's order; NULL once it
-- has (and for checkouts from before this column). An order checkout-manager says it does not hold is sent
-- again, so an `order.place` the broker lost after confirming it (RabbitMQ 3.10's quorum queues can, across
-- a partition) is not an order lost. The first question waits out the usual hand-over.
ALTER TABLE checkouts ADD COLUMN handover_due_at TIMESTAMPTZ;
ALTER TABLE checkouts ALTER COLUMN handover_due_at SET DEFAULT now() + interval '5 seconds';
CREATE INDEX checkouts_handover_due ON checkouts (handover_due_at) WHERE handover_due_at IS NOT NULL;
