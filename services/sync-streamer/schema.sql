-- The declared schema of the `sync` schema: the desired end state, the source of truth.
-- Edit this file, then `cargo xtask db g sync <name>` writes the backward-compatible migration
-- (see docs/migrations.md). Unqualified names resolve to the `sync` schema.


-- The bus's tables in this service's schema (see shared/bus): the transactional outbox, dead
-- letters, and the ids of messages whose effects are already recorded (idempotent handlers).

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

-- Relays that are draining continuously (under load) and need no wake-up.
CREATE TABLE outbox_relay_state (
    relay_id uuid PRIMARY KEY,
    busy_until timestamptz
);

-- Wake the relay when rows commit (NOTIFY is delivered at commit) -- unless a relay is busy
-- draining anyway: Postgres serializes the commits of notifying transactions on one lock,
-- which would cap the commit rate of every producer.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM outbox_relay_state WHERE busy_until > clock_timestamp()) THEN
        PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

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


-- The sync read model (ARCHITECTURE §5): the latest state of every synced row, per scope that
-- can see it. A membership is visible in two scopes (the team's and the member's), so each
-- scope keeps its own copy. Written only by the materializer (one leader at a time), in stream
-- order; `seq` is the CHANGES stream sequence of the changeset that wrote this copy, so a
-- client's cursor selects exactly the copies that changed after it.
CREATE TABLE rows (
    scope text NOT NULL,
    table_name text NOT NULL,
    row_id text NOT NULL,
    -- The row's version; an older or equal version never overwrites a newer one (replays).
    version bigint NOT NULL,
    seq bigint NOT NULL,
    -- A soft-deleted row: the tombstone, kept until the retention purges it.
    deleted boolean NOT NULL,
    -- The row as clients receive it (camelCase JSON written by the api).
    data json NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, table_name, row_id)
);
-- Catch-up: a scope's rows after a cursor, in stream order.
CREATE INDEX rows_scope_seq_idx ON rows (scope, seq);
-- Tombstone purge.
CREATE INDEX rows_tombstones_idx ON rows (changed_at) WHERE deleted;

-- The materializer's progress: every changeset up to `watermark` is applied. Cursors below
-- `horizon` are expired: tombstones they may not have seen were purged.
CREATE TABLE materializer_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    watermark bigint NOT NULL DEFAULT 0,
    horizon bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Leader leases: the materializer runs only on the replica holding the `materializer` lease.
-- Its holder renews it inside every batch transaction (fencing: a replica that lost the
-- lease cannot commit a batch) and on a timer while idle.
CREATE TABLE leases (
    name text PRIMARY KEY,
    holder uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now()
);
