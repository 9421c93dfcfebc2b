-- checkout-manager owns these tables: orders, their lines and saga history, the simulated payment
-- provider's accounts and charges, and the outbox.

CREATE TABLE orders (
    order_id         TEXT PRIMARY KEY CONSTRAINT orders_id_length CHECK (char_length(order_id) BETWEEN 1 AND 100),
    client_id        TEXT NOT NULL CONSTRAINT orders_client_length CHECK (char_length(client_id) BETWEEN 1 AND 100),
    -- Public status.
    status           TEXT NOT NULL CONSTRAINT orders_status_known CHECK (status IN
                     ('PENDING', 'RESERVED', 'PAYMENT_PENDING', 'CONFIRMED', 'REJECTED', 'PAYMENT_DECLINED', 'FAILED')),
    -- The saga's next step; 'done' once the status is final.
    step             TEXT NOT NULL CONSTRAINT orders_step_known CHECK (step IN
                     ('reserve', 'request_payment', 'await_payment', 'commit', 'roll_back', 'done')),
    -- The final status a roll-back leads to (PAYMENT_DECLINED or FAILED).
    roll_back_to     TEXT,
    -- Whether a charge may have gone through and must be given back before the order ends unpaid.
    refund_due       BOOLEAN NOT NULL DEFAULT false,
    total_cents      BIGINT NOT NULL CONSTRAINT orders_total_not_negative CHECK (total_cents >= 0),
    payment_attempts INT NOT NULL DEFAULT 0,
    -- Failed tries of the current step, for backoff.
    step_attempts    INT NOT NULL DEFAULT 0,
    reason           TEXT NOT NULL DEFAULT '',
    -- When the saga driver should next look at the order; NULL once final.
    next_action_at   TIMESTAMPTZ,
    -- Bumped by every change: a step's result is written only if nobody changed the order meanwhile.
    version          BIGINT NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT orders_final_is_done CHECK ((step = 'done') = (next_action_at IS NULL))
);
CREATE INDEX orders_due ON orders (next_action_at) WHERE next_action_at IS NOT NULL;

CREATE TABLE order_lines (
    order_id         TEXT NOT NULL REFERENCES orders (order_id),
    product_id       TEXT NOT NULL,
    quantity         BIGINT NOT NULL CONSTRAINT order_lines_quantity_positive CHECK (quantity > 0),
    unit_price_cents BIGINT NOT NULL CONSTRAINT order_lines_price_not_negative CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, product_id)
);

-- The saga's history, shown as the order's timeline.
CREATE TABLE order_steps (
    id       BIGSERIAL PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders (order_id),
    step     TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    detail   TEXT NOT NULL DEFAULT '',
    at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX order_steps_by_order ON order_steps (order_id, id);

-- The simulated payment provider's books.
CREATE TABLE payment_accounts (
    client_id     TEXT PRIMARY KEY,
    balance_cents BIGINT NOT NULL CONSTRAINT payment_accounts_balance_not_negative CHECK (balance_cents >= 0),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- One row per payment id: the provider's idempotency key, so a charge is taken at most once.
CREATE TABLE payment_charges (
    payment_id   TEXT PRIMARY KEY,
    client_id    TEXT NOT NULL,
    amount_cents BIGINT NOT NULL CONSTRAINT payment_charges_amount_not_negative CHECK (amount_cents >= 0),
    outcome      TEXT NOT NULL CONSTRAINT payment_charges_outcome_known CHECK (outcome IN ('succeeded', 'declined', 'refunded')),
    reason       TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    refunded_at  TIMESTAMPTZ
);

CREATE TABLE outbox (
    id          BIGSERIAL PRIMARY KEY,
    exchange    TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    message_id  UUID NOT NULL,
    body        BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
