-- inventory-manager owns these tables. Stock invariants live here, not only in code:
--   available = on_hand - reserved, 0 <= reserved <= on_hand.

CREATE TABLE products (
    product_id  TEXT PRIMARY KEY
                CONSTRAINT products_id_length CHECK (char_length(product_id) BETWEEN 1 AND 100),
    name        TEXT NOT NULL
                CONSTRAINT products_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
    price_cents BIGINT NOT NULL
                CONSTRAINT products_price_not_negative CHECK (price_cents >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Counters sit apart from catalogue data so that reservations, which touch only this hot row,
-- never contend with catalogue edits, and so the row stays narrow.
CREATE TABLE stock (
    product_id TEXT PRIMARY KEY REFERENCES products (product_id) ON DELETE RESTRICT,
    on_hand    BIGINT NOT NULL
               CONSTRAINT stock_on_hand_not_negative CHECK (on_hand >= 0),
    reserved   BIGINT NOT NULL DEFAULT 0
               CONSTRAINT stock_reserved_not_negative CHECK (reserved >= 0),
    available  BIGINT GENERATED ALWAYS AS (on_hand - reserved) STORED,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT stock_reserved_within_on_hand CHECK (reserved <= on_hand)
);

-- A reservation is never deleted: its state and timestamps are the audit trail.
CREATE TABLE reservations (
    reservation_id TEXT PRIMARY KEY
                   CONSTRAINT reservations_id_length CHECK (char_length(reservation_id) BETWEEN 1 AND 100),
    status         TEXT NOT NULL DEFAULT 'held'
                   CONSTRAINT reservations_status_known
                   CHECK (status IN ('held', 'committed', 'rolled_back', 'expired')),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at     TIMESTAMPTZ NOT NULL,
    committed_at   TIMESTAMPTZ,
    rolled_back_at TIMESTAMPTZ,
    expired_at     TIMESTAMPTZ,
    -- Each final state carries exactly its own timestamp.
    CONSTRAINT reservations_committed_stamped CHECK ((status = 'committed') = (committed_at IS NOT NULL)),
    CONSTRAINT reservations_rolled_back_stamped CHECK ((status = 'rolled_back') = (rolled_back_at IS NOT NULL)),
    CONSTRAINT reservations_expired_stamped CHECK ((status = 'expired') = (expired_at IS NOT NULL))
);

-- The sweeper's work list: only held reservations, by deadline.
CREATE INDEX reservations_held_by_expiry ON reservations (expires_at) WHERE status = 'held';

-- No foreign key to products or stock: the stock row is the hot one, and a key-share lock on it
-- per line measurably halves reservation throughput. The reserving UPDATE already proves the product exists.
CREATE TABLE reservation_lines (
    reservation_id TEXT NOT NULL REFERENCES reservations (reservation_id) ON DELETE RESTRICT,
    product_id     TEXT NOT NULL,
    quantity       BIGINT NOT NULL
                   CONSTRAINT reservation_lines_quantity_positive CHECK (quantity > 0),
    PRIMARY KEY (reservation_id, product_id)
);
