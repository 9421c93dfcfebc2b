-- payment-gateway (the simulated provider) owns these tables: its clients' balances and its charges.

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
CREATE INDEX payment_charges_by_client ON payment_charges (client_id);
