-- The declared bus tables, in every service's schema: the transactional outbox, dead letters,
-- and the ids of messages whose effects are already recorded (idempotent handlers). Each
-- schema's declaration is this file followed by `services/<service>/schema.sql`
-- (docs/migrations.md, "The bus's tables"). Unqualified names resolve to the service's schema.

CREATE TABLE outbox (
    outbox_id uuid PRIMARY KEY,
    -- Insert order, used only to keep messages with one ordering key in order. Never a
    -- publish cursor: positions commit out of order.
    position bigserial NOT NULL,
    subject text NOT NULL,
    payload bytea NOT NULL,
    headers jsonb NOT NULL DEFAULT '{}'::jsonb,
    ordering_key text,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at timestamptz,
    publish_attempts integer NOT NULL DEFAULT 0,
    last_error text
);
-- A lean outbox: the relay deletes the rows it publishes, so the table holds the unsent
-- backlog and nothing else is indexed than the relay's claim (by position) and its per-key
-- order check and follower claim (by key, position). The indexes stay partial: every live row
-- is unsent anyway, and rows an earlier release's relay marked sent stay out of them.
CREATE INDEX outbox_unsent_idx ON outbox (position) WHERE sent_at IS NULL;
CREATE INDEX outbox_unsent_key_idx ON outbox (ordering_key, position) WHERE sent_at IS NULL;
COMMENT ON COLUMN outbox.sent_at IS 'set only by relays before the lean outbox (they marked rows sent, this one deletes them); such rows are never published again and are pruned after the retention period';

-- Unused since the relay is woken in process (there is no NOTIFY to suppress; the trigger
-- that called outbox_notify() is dropped); a relay of the previous release still writes its
-- busy mark here during a rolling deploy. Both are dropped in a later release.
CREATE TABLE outbox_relay_state (
    relay_id uuid PRIMARY KEY,
    busy_until timestamptz
);

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM outbox_relay_state WHERE busy_until > clock_timestamp()) THEN
        PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TABLE dead_letters (
    dead_letter_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    handler text NOT NULL,
    subject text NOT NULL,
    message_id text NOT NULL,
    payload bytea NOT NULL,
    headers jsonb NOT NULL DEFAULT '{}'::jsonb,
    attempts integer NOT NULL,
    last_error text NOT NULL,
    dead_at timestamptz NOT NULL DEFAULT now(),
    redrive_requested_at timestamptz,
    redriven_at timestamptz,
    UNIQUE (handler, message_id)
);
CREATE INDEX dead_letters_redrive_idx ON dead_letters (redrive_requested_at)
    WHERE redrive_requested_at IS NOT NULL AND redriven_at IS NULL;

CREATE TABLE processed_messages (
    handler text NOT NULL,
    message_id text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (handler, message_id)
);
