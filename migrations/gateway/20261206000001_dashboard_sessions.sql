-- api-gateway owns this table: the dashboard's sign-ins. The browser holds a random session id, never the API
-- key; only the id's SHA-256 digest is stored. A session ends when it expires, when its operator signs out, or
-- when its key is revoked (lookups join the live keys).
CREATE TABLE dashboard_sessions (
    digest     BYTEA PRIMARY KEY CONSTRAINT dashboard_sessions_digest_length CHECK (length(digest) = 32),
    key_id     TEXT NOT NULL REFERENCES api_keys (key_id),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);

-- Expired sessions are deleted at each sign-in, by this index.
CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);
