-- What the worker has learnt from `journal_entry.created` events (the walking skeleton; the
-- insights issue builds on it).
CREATE TABLE journal_entry_activity (
    journal_entry_id uuid PRIMARY KEY,
    author_user_id uuid NOT NULL,
    team_id uuid,
    entry_created_at timestamptz NOT NULL,
    message_id text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX journal_entry_activity_author_idx ON journal_entry_activity (author_user_id);
