-- The declared schema of the `cron` schema: the desired end state, the source of truth.
-- Edit this file, then `cargo xtask db g cron <name>` writes the backward-compatible migration
-- (see docs/migrations.md). Unqualified names resolve to the `cron` schema.
-- The bus's tables (outbox, dead letters, processed messages) are declared once, in
-- shared/bus/schema.sql, which comes first in every schema's declaration.

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
