-- The last stock count of each product (what UpsertProduct set, and when), so the audit can check
-- conservation: counted_on_hand - units committed since counted_at = on_hand.
ALTER TABLE stock
    ADD COLUMN counted_on_hand BIGINT,
    ADD COLUMN counted_at      TIMESTAMPTZ;
-- Records start now for stock that existed before.
UPDATE stock SET counted_on_hand = on_hand, counted_at = clock_timestamp();
ALTER TABLE stock
    ALTER COLUMN counted_on_hand SET NOT NULL,
    ALTER COLUMN counted_at SET NOT NULL,
    ALTER COLUMN counted_at SET DEFAULT clock_timestamp();
CREATE INDEX reservations_committed_at ON reservations (committed_at) WHERE status = 'committed';
