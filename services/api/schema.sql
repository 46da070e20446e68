-- The declared schema of the `api` schema: the desired end state, the source of truth.
-- Edit this file, then `cargo xtask db g api <name>` writes the backward-compatible migration
-- (see docs/migrations.md). Unqualified names resolve to the `api` schema.
-- The bus's tables (outbox, dead letters, processed messages) are declared once, in
-- shared/bus/schema.sql, which comes first in every schema's declaration.

-- Users and sessions, journal entries, app teams, prompts.

CREATE TABLE users (
    user_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    version bigint NOT NULL DEFAULT 1,
    avatar_url text,
    -- IANA zone name; the caller's day (prompts.today) is computed in it.
    timezone text NOT NULL DEFAULT 'UTC',
    -- Google's stable subject (`sub`) once the account is linked to Google.
    google_subject text,
    email_verified boolean NOT NULL DEFAULT false,
    -- A deleted account frees its address (`email` becomes a placeholder) but keeps it here
    -- until the purge, so support can still tell whose account it was.
    deleted_email text,
    -- When the account purge (ACCOUNT_PURGE_RETENTION_DAYS after `deleted_at`) removed what
    -- the account owned and anonymised this row (docs/api.md, "Account deletion").
    purged_at timestamptz
);
CREATE UNIQUE INDEX users_email_idx ON users (lower(email));
CREATE UNIQUE INDEX users_google_subject_idx ON users (google_subject);

-- Only the SHA-256 of a session token is stored: a database leak yields no usable session.
CREATE TABLE sessions (
    session_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (user_id),
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    -- What the owner sees in `auth.listSessions`.
    user_agent text,
    ip_address text,
    -- `logout`, `revoked`, `revoked_others`, `revoked_all`, `account_deleted`.
    revoked_reason text
);
CREATE INDEX sessions_user_idx ON sessions (user_id);

CREATE TABLE journal_entries (
    journal_entry_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    author_user_id uuid NOT NULL REFERENCES users (user_id),
    team_id uuid,
    title text NOT NULL,
    content text NOT NULL,
    mood smallint CHECK (mood BETWEEN 1 AND 5),
    tags text[] NOT NULL DEFAULT '{}',
    entry_date date,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    version bigint NOT NULL DEFAULT 1,
    prompt_id uuid
);
CREATE INDEX journal_entries_author_idx ON journal_entries (author_user_id, created_at DESC);
CREATE INDEX journal_entries_team_idx ON journal_entries (team_id, created_at DESC) WHERE team_id IS NOT NULL;
CREATE INDEX journal_entries_tags_idx ON journal_entries USING gin (tags);
-- Full-text search on title + content; queries must use this exact expression.
CREATE INDEX journal_entries_search_idx ON journal_entries
    USING gin (to_tsvector('simple'::regconfig, title || ' ' || content));


-- App teams (session-authenticated UI teams; API teams are separate).

CREATE TABLE teams (
    team_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    created_by_user_id uuid NOT NULL REFERENCES users (user_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    version bigint NOT NULL DEFAULT 1
);

-- A membership is a synced row: leaving or removal soft-deletes it, rejoining revives it.
CREATE TABLE team_members (
    team_id uuid NOT NULL REFERENCES teams (team_id),
    user_id uuid NOT NULL REFERENCES users (user_id),
    role text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    version bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user_idx ON team_members (user_id) WHERE deleted_at IS NULL;

CREATE TABLE team_invitations (
    team_invitation_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id uuid NOT NULL REFERENCES teams (team_id),
    email text NOT NULL,
    role text NOT NULL CHECK (role IN ('admin', 'member')),
    invited_by_user_id uuid NOT NULL REFERENCES users (user_id),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'declined', 'revoked')),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    responded_at timestamptz
);
-- One open invitation per address and team.
CREATE UNIQUE INDEX team_invitations_pending_idx ON team_invitations (team_id, lower(email)) WHERE status = 'pending';
CREATE INDEX team_invitations_email_idx ON team_invitations (lower(email)) WHERE status = 'pending';


-- Journaling prompts, owned by a user or by a team, optionally scheduled.

CREATE TABLE prompts (
    prompt_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_user_id uuid REFERENCES users (user_id),
    team_id uuid REFERENCES teams (team_id),
    author_user_id uuid NOT NULL REFERENCES users (user_id),
    text text NOT NULL,
    -- Schedule (all three or none): local time of day, IANA zone, ISO weekdays (1 = Monday).
    schedule_time time,
    schedule_timezone text,
    schedule_weekdays smallint[],
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    version bigint NOT NULL DEFAULT 1,
    CONSTRAINT prompts_one_owner CHECK ((owner_user_id IS NULL) <> (team_id IS NULL)),
    CONSTRAINT prompts_schedule_complete CHECK (
        (schedule_time IS NULL AND schedule_timezone IS NULL AND schedule_weekdays IS NULL)
        OR (schedule_time IS NOT NULL AND schedule_timezone IS NOT NULL AND schedule_weekdays IS NOT NULL))
);
CREATE INDEX prompts_owner_idx ON prompts (owner_user_id) WHERE owner_user_id IS NOT NULL;
CREATE INDEX prompts_team_idx ON prompts (team_id) WHERE team_id IS NOT NULL;

-- Scheduled prompt occurrences already dispatched (services/api/src/cron_jobs.rs): one row per
-- prompt and local date in the schedule's zone, written in the transaction that emits the
-- `prompt.due` events, so a re-run or a redelivered task never notifies twice.
CREATE TABLE prompt_dispatches (
    prompt_id uuid NOT NULL REFERENCES prompts (prompt_id),
    local_date date NOT NULL,
    scheduled_at timestamptz NOT NULL,
    recipients integer NOT NULL,
    dispatched_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (prompt_id, local_date)
);


-- Google sign-in in flight: what `/auth/google/callback` needs to finish what
-- `/auth/google/start` began. Single use, short-lived; the state itself is stored hashed.
CREATE TABLE oauth_states (
    state_hash bytea PRIMARY KEY,
    pkce_verifier text NOT NULL,
    nonce text NOT NULL,
    return_to text,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- Entries may belong to a team and answer a prompt (declared after both tables exist).
ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_team_fk FOREIGN KEY (team_id) REFERENCES teams (team_id);
ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_prompt_fk FOREIGN KEY (prompt_id) REFERENCES prompts (prompt_id);


-- Open API: API teams (the `teams_api` side of the dual team model: an app team that has API
-- access), their plan subscription, API keys and IP allow-lists. Not synced to clients.

-- Plans: a reference table, its rows seeded by a hand-written migration (plans_seed).
CREATE TABLE plans (
    -- `free`, `pro`: stable names code and clients use.
    plan_id text PRIMARY KEY,
    name text NOT NULL,
    -- Requests per subscription period (a calendar month from period_start).
    monthly_request_quota bigint NOT NULL CHECK (monthly_request_quota >= 0),
    requests_per_second integer NOT NULL CHECK (requests_per_second > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One per app team that enabled API access; the team's roles govern it.
CREATE TABLE api_teams (
    api_team_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id uuid NOT NULL UNIQUE REFERENCES teams (team_id),
    enabled_by_user_id uuid NOT NULL REFERENCES users (user_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Set while an owner or admin has switched the team's open API access off
    -- (`subscriptions.disableApiAccess`): every request with its keys is refused
    -- (403 API_ACCESS_DISABLED) until `subscriptions.enableApiAccess` clears it.
    api_access_disabled_at timestamptz,
    api_access_disabled_by_user_id uuid REFERENCES users (user_id)
);

-- One per API team: its plan and the current metering period. usage_count is the requests
-- counted in [period_start, period_end); metering rolls the period forward.
CREATE TABLE subscriptions (
    subscription_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    api_team_id uuid NOT NULL UNIQUE REFERENCES api_teams (api_team_id),
    plan_id text NOT NULL REFERENCES plans (plan_id),
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    usage_count bigint NOT NULL DEFAULT 0 CHECK (usage_count >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscriptions_period_order CHECK (period_end > period_start)
);
CREATE INDEX subscriptions_plan_idx ON subscriptions (plan_id);

-- Closed metering periods: when a subscription's period rolls over (metering.rs), the period
-- that ended is copied here with its count, in the same statement, so usage history survives
-- the reset. plan_id and monthly_request_quota are the plan in force when it closed. Periods
-- skipped entirely (no request for months) have no row: their count was 0.
CREATE TABLE subscription_usage_periods (
    subscription_id uuid NOT NULL REFERENCES subscriptions (subscription_id),
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    plan_id text NOT NULL REFERENCES plans (plan_id),
    monthly_request_quota bigint NOT NULL,
    usage_count bigint NOT NULL CHECK (usage_count >= 0),
    closed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, period_start),
    CONSTRAINT subscription_usage_periods_order CHECK (period_end > period_start)
);
CREATE INDEX subscription_usage_periods_plan_idx ON subscription_usage_periods (plan_id);

-- A key is `jk_live_<8 chars>_<43 chars>`. `prefix` (`jk_live_<8 chars>`) is shown and logged
-- and finds the row; `key_hash` is the scrypt PHC string of the whole key, which is never
-- stored or logged.
CREATE TABLE api_keys (
    api_key_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    api_team_id uuid NOT NULL REFERENCES api_teams (api_team_id),
    name text NOT NULL,
    prefix text NOT NULL UNIQUE,
    key_hash text NOT NULL,
    created_by_user_id uuid NOT NULL REFERENCES users (user_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Written in the background, at most about once a minute per key and replica.
    last_used_at timestamptz,
    expires_at timestamptz,
    revoked_at timestamptz,
    revoked_by_user_id uuid REFERENCES users (user_id)
);
CREATE INDEX api_keys_api_team_idx ON api_keys (api_team_id, created_at);

-- Client networks allowed to use an API team's keys; none = every network.
CREATE TABLE api_team_ip_rules (
    api_team_ip_rule_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    api_team_id uuid NOT NULL REFERENCES api_teams (api_team_id),
    cidr cidr NOT NULL,
    created_by_user_id uuid NOT NULL REFERENCES users (user_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_team_ip_rules_unique UNIQUE (api_team_id, cidr)
);
-- One row per open API request, refused ones included (docs/api.md, "Request logs"). Written
-- in batches off the request path. No secrets: header values that carry credentials are
-- redacted before they get here. Not synced (no soft delete); purged by age.
CREATE TABLE request_logs (
    request_log_id uuid PRIMARY KEY,
    created_at timestamptz NOT NULL,
    -- Unknown when the key was missing or invalid.
    team_id uuid,
    api_team_id uuid,
    api_key_prefix text,
    method text NOT NULL,
    path text NOT NULL,
    status smallint NOT NULL,
    duration_us bigint NOT NULL,
    client_ip inet NOT NULL,
    user_agent text,
    request_id text,
    request_bytes bigint NOT NULL,
    response_bytes bigint NOT NULL,
    -- The error's stable code when the request was refused or failed.
    error_code text,
    -- Request headers by lowercase name, credentials redacted.
    request_headers jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX request_logs_team_idx ON request_logs (team_id, created_at DESC, request_log_id DESC);
CREATE INDEX request_logs_created_at_idx ON request_logs (created_at);

-- Data exports users asked for (`exports.create`). The worker builds the archive; its
-- `export.ready` event marks the row ready with the archive's size and presigned link (the
-- link the user is also sent: a capability that expires, kept only until it does).
CREATE TABLE exports (
    export_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (user_id),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ready')),
    requested_at timestamptz NOT NULL DEFAULT now(),
    ready_at timestamptz,
    size_bytes bigint,
    download_url text,
    download_expires_at timestamptz,
    -- Set when the account is deleted: the archive's object is deleted in the same request
    -- (a presigned link cannot be revoked; a missing object refuses it) and the link is gone.
    revoked_at timestamptz
);
CREATE INDEX exports_user_idx ON exports (user_id, requested_at DESC);

-- Attachments (CDN, services/api/src/attachments.rs): files clients upload straight to object
-- storage through a presigned PUT, verified by the worker. A synced row (soft delete,
-- version). The object key is `attachments/<owner_user_id>/<attachment_id>`; the file name
-- the client gave is kept, sanitized, only as metadata for downloads. `team_id` is the
-- entry's team (entries never change team), for visibility and the sync scope.
CREATE TABLE attachments (
    attachment_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_user_id uuid NOT NULL REFERENCES users (user_id),
    journal_entry_id uuid REFERENCES journal_entries (journal_entry_id),
    team_id uuid,
    file_name text NOT NULL,
    content_type text NOT NULL,
    size_bytes bigint NOT NULL CHECK (size_bytes > 0),
    object_key text NOT NULL,
    -- `pending` (URL issued) → `verifying` (completeUpload) → `ready` | `rejected`;
    -- `expired`: not uploaded or not verified in time (objects deleted, row soft-deleted).
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'verifying', 'ready', 'rejected', 'expired')),
    rejection_code text,
    rejection_message text,
    thumbnail_key text,
    width integer,
    height integer,
    upload_expires_at timestamptz NOT NULL,
    completed_at timestamptz,
    verified_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    version bigint NOT NULL DEFAULT 1,
    -- What downloads serve once `ready`: the worker's copy of the bytes it verified
    -- (`verified/<owner_user_id>/<attachment_id>`), a key no presigned URL can write, so a
    -- second PUT through a still-valid upload URL cannot swap what was verified. NULL for
    -- rows verified before it existed (their upload URLs have long expired).
    verified_key text
);
CREATE INDEX attachments_owner_idx ON attachments (owner_user_id, created_at DESC);
CREATE INDEX attachments_entry_idx ON attachments (journal_entry_id) WHERE journal_entry_id IS NOT NULL;
-- The abandoned-upload clean-up looks at unfinished uploads only.
CREATE INDEX attachments_unfinished_idx ON attachments (created_at)
    WHERE status IN ('pending', 'verifying') AND deleted_at IS NULL;
CREATE INDEX attachments_deleted_idx ON attachments (deleted_at) WHERE deleted_at IS NOT NULL;
