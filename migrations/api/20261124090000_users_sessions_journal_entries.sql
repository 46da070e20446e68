-- Users, sessions and journal entries: the walking skeleton of the api (the api issue grows
-- them with backward-compatible migrations).

CREATE TABLE users (
    user_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    version bigint NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX users_email_idx ON users (lower(email));

-- Only the SHA-256 of a session token is stored: a database leak yields no usable session.
CREATE TABLE sessions (
    session_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (user_id),
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
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
    version bigint NOT NULL DEFAULT 1
);
CREATE INDEX journal_entries_author_idx ON journal_entries (author_user_id, created_at DESC);
