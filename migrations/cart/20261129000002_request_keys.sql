-- Applied cart requests by idempotency key, so a retried add or remove gives the first answer again
-- and has no second effect. request_key is 'key:<Idempotency-Key>' from the client, or
-- 'message:<message id>' when the client sent none (a redelivery of the same job). fingerprint is the
-- operation and its body: the same key with another body is refused. Pruned after a day.
CREATE TABLE cart_requests (
    client_id   TEXT NOT NULL,
    request_key TEXT NOT NULL CONSTRAINT cart_requests_key_length CHECK (char_length(request_key) BETWEEN 1 AND 220),
    fingerprint TEXT NOT NULL,
    response    JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, request_key)
);
CREATE INDEX cart_requests_age ON cart_requests (created_at);

-- Replaced by cart_requests.
DROP TABLE processed_messages;
