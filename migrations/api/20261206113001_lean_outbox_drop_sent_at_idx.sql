-- no-transaction
-- lean_outbox (api schema), by hand: `db g` does not generate index drops (docs/migrations.md).
-- Only the pruning of rows marked sent used this index; the previous release's relay still
-- works without it (its prune scans the small table). Its lock_timeout is the session's, set
-- by 20261206113000_lean_outbox.sql (pending migrations run on one connection).
DROP INDEX CONCURRENTLY IF EXISTS outbox_sent_at_idx;
