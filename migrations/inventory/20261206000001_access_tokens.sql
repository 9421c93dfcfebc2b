-- inventory-manager owns this table: the bearer tokens its callers present. A token itself is never stored,
-- only its SHA-256 digest (tokens are long and random, so a fast digest cannot be brute-forced); token_id is
-- the token's public prefix, shown in listings and used to revoke it.
--   service:  what the mesh's own services need (reads, reserve, commit, roll back);
--   operator: that and the catalogue's writes (UpsertProduct).
CREATE TABLE access_tokens (
    token_id   TEXT PRIMARY KEY,
    digest     BYTEA NOT NULL UNIQUE CONSTRAINT access_tokens_digest_length CHECK (length(digest) = 32),
    role       TEXT NOT NULL CONSTRAINT access_tokens_role_known CHECK (role IN ('service', 'operator')),
    note       TEXT NOT NULL DEFAULT '' CONSTRAINT access_tokens_note_length CHECK (char_length(note) <= 200),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ
);
