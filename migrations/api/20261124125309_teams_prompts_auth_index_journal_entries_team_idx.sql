-- no-transaction
-- teams_prompts_auth (api schema), generated: CREATE INDEX CONCURRENTLY cannot run in a
-- transaction, nor next to another statement, so it has a migration of its own. Its
-- lock_timeout is the session's, set by 20261124125306_teams_prompts_auth.sql (pending migrations run on one
-- connection).
CREATE INDEX CONCURRENTLY IF NOT EXISTS journal_entries_team_idx ON journal_entries USING btree (team_id, created_at DESC) WHERE (team_id IS NOT NULL);
