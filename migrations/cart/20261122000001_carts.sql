-- cart-manager owns these tables.

CREATE TABLE cart_items (
    client_id  TEXT NOT NULL CONSTRAINT cart_items_client_length CHECK (char_length(client_id) BETWEEN 1 AND 100),
    product_id TEXT NOT NULL CONSTRAINT cart_items_product_length CHECK (char_length(product_id) BETWEEN 1 AND 100),
    quantity   BIGINT NOT NULL CONSTRAINT cart_items_quantity_range CHECK (quantity BETWEEN 1 AND 1000000),
    added_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, product_id)
);

-- One row per checkout: the idempotency record that makes a retried checkout return the same order.
CREATE TABLE checkouts (
    client_id       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    order_id        TEXT NOT NULL UNIQUE,
    total_cents     BIGINT NOT NULL,
    -- The order as handed to checkout-manager, so it can be shown before checkout-manager has taken it in.
    order_snapshot  JSONB NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, idempotency_key)
);

-- Requests already applied, by message id, so a redelivered add is not added twice. Pruned after a day.
CREATE TABLE processed_messages (
    message_id   UUID PRIMARY KEY,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX processed_messages_age ON processed_messages (processed_at);

-- Transactional outbox (see bus::outbox): written with the state change, published by the relay.
CREATE TABLE outbox (
    id          BIGSERIAL PRIMARY KEY,
    exchange    TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    message_id  UUID NOT NULL,
    body        BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
