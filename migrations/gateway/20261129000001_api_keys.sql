-- api-gateway owns this table: the API keys it admits. A key itself is never stored, only its SHA-256
-- digest (keys are 128 random bits, so a fast digest cannot be brute-forced); key_id is the key's public
-- prefix, shown in listings and used to revoke it.
CREATE TABLE api_keys (
    key_id          TEXT PRIMARY KEY,
    digest          BYTEA NOT NULL UNIQUE CONSTRAINT api_keys_digest_length CHECK (length(digest) = 32),
    role            TEXT NOT NULL CONSTRAINT api_keys_role_known CHECK (role IN ('shopper', 'operator')),
    channel         TEXT NOT NULL CONSTRAINT api_keys_channel_format CHECK (channel ~ '^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$'),
    -- Requests per second this key may send; NULL takes the gateway's GATEWAY_KEY_RATE_PER_SECOND.
    rate_per_second INT CONSTRAINT api_keys_rate_positive CHECK (rate_per_second > 0),
    note            TEXT NOT NULL DEFAULT '' CONSTRAINT api_keys_note_length CHECK (char_length(note) <= 200),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at      TIMESTAMPTZ
);
