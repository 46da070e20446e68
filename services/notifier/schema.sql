-- The declared schema of the `notifier` schema: the desired end state, the source of truth.
-- Edit this file, then `cargo xtask db g notifier <name>` writes the backward-compatible migration
-- (see docs/migrations.md). Unqualified names resolve to the `notifier` schema.
-- The bus's tables (outbox, dead letters, processed messages) are declared once, in
-- shared/bus/schema.sql, which comes first in every schema's declaration.

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
