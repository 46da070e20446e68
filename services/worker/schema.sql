-- The declared schema of the `worker` schema: the desired end state, the source of truth.
-- Edit this file, then `cargo xtask db g worker <name>` writes the backward-compatible migration
-- (see docs/migrations.md). Unqualified names resolve to the `worker` schema.
-- The bus's tables (outbox, dead letters, processed messages) are declared once, in
-- shared/bus/schema.sql, which comes first in every schema's declaration.

-- Entry insights (docs/worker.md). The worker learns about entries only from the api's
-- `journal_entry.*` events, which carry the facts insights need; it keeps one row per entry
-- (latest version wins, so redelivered or reordered events are harmless) and derives the
-- per-user rows below from them.

-- One row per journal entry the worker has heard of (it started as the walking skeleton's
-- record of `journal_entry.created`).
CREATE TABLE journal_entry_activity (
    journal_entry_id uuid PRIMARY KEY,
    author_user_id uuid NOT NULL,
    team_id uuid,
    entry_created_at timestamptz NOT NULL,
    -- The message that last changed the row.
    message_id text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    -- The entry's version these facts describe; an older event never overwrites a newer one.
    version bigint NOT NULL DEFAULT 1,
    word_count integer NOT NULL DEFAULT 0,
    -- The entry's own date, when its author set one.
    entry_date date,
    -- When it was created, in the author's timezone (from the first event seen).
    created_local_date date,
    created_local_hour smallint,
    deleted boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX journal_entry_activity_author_idx ON journal_entry_activity (author_user_id);

-- Per-user totals, synced to the user's clients as the table `entry_insights` (row id = the
-- user id). Counts cover live entries the user wrote, personal and team ones.
CREATE TABLE entry_insights (
    user_id uuid PRIMARY KEY,
    entry_count integer NOT NULL DEFAULT 0,
    word_count bigint NOT NULL DEFAULT 0,
    -- Days with at least one entry.
    active_days integer NOT NULL DEFAULT 0,
    first_entry_day date,
    last_entry_day date,
    -- Consecutive days with entries ending at last_entry_day.
    current_streak_days integer NOT NULL DEFAULT 0,
    longest_streak_days integer NOT NULL DEFAULT 0,
    -- 24 counts: entries by the hour they were written (author's timezone).
    hour_histogram integer[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- 0 until the first change is published.
    version bigint NOT NULL DEFAULT 0
);

-- Entries per day, synced as the table `entry_insight_days` (row id `<userId>:<day>`). A day
-- whose last entry is deleted keeps its row as a tombstone (deleted_at).
CREATE TABLE entry_insight_days (
    user_id uuid NOT NULL,
    day date NOT NULL,
    entry_count integer NOT NULL,
    word_count bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    version bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (user_id, day)
);

-- Insight rows changed but not yet published to the user's clients: one row per (user, day)
-- the entry handlers changed. The handlers update `entry_insights` and `entry_insight_days`
-- at once; their changesets go out in one changeset per user after INSIGHTS_SYNC_DELAY_MS
-- (docs/worker.md, "Publishing insights"), so a user writing many entries a second costs one
-- changeset per window, not one per batch. Rows are inserted and deleted, never updated.
CREATE TABLE insight_sync_due (
    user_id uuid NOT NULL,
    day date NOT NULL,
    PRIMARY KEY (user_id, day)
);


-- Data exports the worker completed: the archive's object key and size (exactly one row per
-- export, written with its `export.ready` event).
CREATE TABLE data_exports (
    export_id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    object_key text NOT NULL,
    size_bytes bigint NOT NULL,
    requested_at timestamptz NOT NULL,
    completed_at timestamptz NOT NULL DEFAULT now(),
    link_expires_at timestamptz NOT NULL,
    message_id text NOT NULL
);
CREATE INDEX data_exports_user_idx ON data_exports (user_id, completed_at DESC);

-- Users whose account the api purged (`user.purged`): their insights, entry activity and
-- export records are gone, and entry events about them that arrive late are ignored rather
-- than recreating any of it.
CREATE TABLE purged_users (
    user_id uuid PRIMARY KEY,
    purged_at timestamptz NOT NULL DEFAULT now()
);
