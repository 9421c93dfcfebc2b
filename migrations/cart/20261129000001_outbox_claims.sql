-- The relay claims outbox rows with a short lease instead of holding row locks (and a pooled
-- connection) while it publishes, and parks a row it cannot decode so it never blocks the rows behind it.
ALTER TABLE outbox
    ADD COLUMN claimed_until TIMESTAMPTZ,
    ADD COLUMN parked_at     TIMESTAMPTZ,
    ADD COLUMN parked_reason TEXT;
CREATE INDEX outbox_pending ON outbox (id) WHERE parked_at IS NULL;
