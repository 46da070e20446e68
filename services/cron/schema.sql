-- The declared schema of the `cron` schema: the desired end state, the source of truth.
-- Edit this file, then `cargo xtask db g cron <name>` writes the backward-compatible migration
-- (see docs/migrations.md). Unqualified names resolve to the `cron` schema.


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


-- The scheduled jobs (services/cron/src/jobs.rs), registered by every replica at start. The
-- row is also the job's cluster-wide mutex: a run holds the lease (`lease_run_id`, renewed by
-- its replica) and no other run of the job starts while it is unexpired; a replica that dies
-- mid-run stops renewing and the lease lapses. `last_scheduled_for` is the latest tick
-- accounted for (run, skipped or caught up): a tick at or before it is never run again.
CREATE TABLE jobs (
    job_name text PRIMARY KEY,
    schedule text NOT NULL,
    enabled boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    last_scheduled_for timestamptz,
    lease_run_id uuid,
    lease_holder text,
    lease_expires_at timestamptz,
    -- The replica whose configuration set `schedule` and `enabled` (the newest start wins;
    -- every replica follows the stored values).
    configured_by text
);

-- Run history: one row per tick of a job at most (`job_runs_one_per_tick`), whichever
-- replica got there first. A run emits the job's messages through the outbox in the same
-- transaction that marks it succeeded, so `succeeded` means the work is durably queued.
CREATE TABLE job_runs (
    job_run_id uuid PRIMARY KEY,
    job_name text NOT NULL REFERENCES jobs (job_name),
    -- The tick this run stands for.
    scheduled_for timestamptz NOT NULL,
    -- `schedule`: fired on time; `catch_up`: the tick was missed (every replica down, or the
    -- scheduler could not reach Postgres) and is run once for all the ticks missed.
    trigger text NOT NULL CHECK (trigger IN ('schedule', 'catch_up')),
    -- Ticks missed before this one that were not run (catch-up runs only).
    missed_ticks integer NOT NULL DEFAULT 0,
    -- hostname, pid and a random suffix of the replica that ran it.
    replica_id text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    -- `skipped`: an earlier run still held the lease; `abandoned`: its replica stopped
    -- renewing the lease before finishing (it died).
    outcome text NOT NULL CHECK (outcome IN ('running', 'succeeded', 'failed', 'skipped', 'abandoned')),
    detail text,
    -- The outbox ids of the messages it emitted (their `Nats-Msg-Id`).
    message_ids uuid[] NOT NULL DEFAULT '{}',
    CONSTRAINT job_runs_one_per_tick UNIQUE (job_name, scheduled_for)
);
CREATE INDEX job_runs_started_idx ON job_runs (job_name, started_at DESC);
