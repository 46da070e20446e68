-- The declared schema of the `notifier` schema: the desired end state, the source of truth.
-- Edit this file, then `cargo xtask db g notifier <name>` writes the backward-compatible migration
-- (see docs/migrations.md). Unqualified names resolve to the `notifier` schema.


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


-- One row per notification the notifier was asked to deliver, keyed by the SuprSend
-- `$idempotency_key` derived from the triggering message id: a redelivered message finds its
-- row `delivered` and sends nothing.
CREATE TABLE notifications (
    idempotency_key text PRIMARY KEY,
    -- The bus message that asked for it.
    message_id text NOT NULL,
    -- `workflow`: POST /trigger/; `identify`: POST /v1/user/<distinct_id>/.
    kind text NOT NULL CHECK (kind IN ('workflow', 'identify')),
    workflow text,
    distinct_id text NOT NULL,
    -- `skipped`: SUPRSEND_API_KEY unset (development); `rejected`: a 4xx other than 429,
    -- dead-lettered; `failed`: retries exhausted, dead-lettered.
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'retrying', 'delivered', 'rejected', 'failed', 'skipped')),
    attempts integer NOT NULL DEFAULT 0,
    last_http_status smallint,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX notifications_created_at_idx ON notifications (created_at);

-- Every HTTP attempt at SuprSend.
CREATE TABLE delivery_attempts (
    delivery_attempt_id uuid PRIMARY KEY,
    idempotency_key text NOT NULL REFERENCES notifications (idempotency_key) ON DELETE CASCADE,
    attempt integer NOT NULL,
    -- `accepted` (2xx), `retryable` (429 or 5xx), `rejected` (other 4xx), `timeout`,
    -- `network_error`.
    outcome text NOT NULL CHECK (outcome IN ('accepted', 'retryable', 'rejected', 'timeout', 'network_error')),
    http_status smallint,
    latency_ms integer NOT NULL,
    -- The response body (first 2 KB) or the transport error.
    detail text,
    attempted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_attempts_key_idx ON delivery_attempts (idempotency_key, attempted_at);

-- Who the notifier can reach, learnt from `user.created` / `user.profile_updated` (never
-- from the api's schema): resolves an `export.ready`'s recipient and an invitee's account.
-- `version` orders profile events, so a late older one never overwrites a newer profile.
CREATE TABLE recipients (
    user_id uuid PRIMARY KEY,
    email text NOT NULL,
    name text NOT NULL,
    timezone text NOT NULL,
    version bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recipients_email_idx ON recipients (lower(email));
