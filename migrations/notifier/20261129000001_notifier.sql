-- notifier owns these tables: shoppers' contact details, and one row per order event it handled, so an
-- event delivered twice (or redelivered after a crash mid-send) is emailed once.
CREATE TABLE client_profiles (
    client_id  TEXT PRIMARY KEY CONSTRAINT client_profiles_id_length CHECK (char_length(client_id) BETWEEN 1 AND 100),
    -- NULL: the shopper asked for no emails.
    email      TEXT CONSTRAINT client_profiles_email_length CHECK (char_length(email) BETWEEN 3 AND 254),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE notifications (
    -- The event's message id: the outbox republishes an event with the same id, so it is the idempotency key.
    event_id      UUID PRIMARY KEY,
    order_id      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    -- Who it goes to, fixed at the first attempt so a retry sends the same email.
    recipient     TEXT,
    -- sending: claimed, maybe handed to the SMTP server; sent: the server took it; skipped: no address;
    -- rejected: the server refused it for good (the event is dead-lettered with the reason).
    state         TEXT NOT NULL CONSTRAINT notifications_state_known CHECK (state IN ('sending', 'sent', 'skipped', 'rejected')),
    attempts      INT NOT NULL DEFAULT 1,
    -- A claim of a delivery being sent; another delivery of the same event waits until it runs out.
    claimed_until TIMESTAMPTZ,
    detail        TEXT NOT NULL DEFAULT '',
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at       TIMESTAMPTZ
);
CREATE INDEX notifications_by_order ON notifications (order_id);
