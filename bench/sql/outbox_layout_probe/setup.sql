-- Three outbox layouts side by side (docs/benchmarks.md, "Outbox layouts: WAL per create").
-- `outbox` is the bus's table, read from its one declaration (with the bus's other tables,
-- which the probe leaves alone). `\ir` resolves the path from this file's directory.
\ir ../../../shared/bus/schema.sql
-- One row per create carrying both messages (the event and the changeset).
CREATE TABLE outbox_combined (LIKE outbox INCLUDING ALL);
ALTER TABLE outbox_combined
    ADD COLUMN second_subject text, ADD COLUMN second_payload bytea,
    ADD COLUMN second_ordering_key text;
-- Two rows, no uuid primary key (the relay would delete by position).
CREATE TABLE outbox_no_pk (LIKE outbox INCLUDING DEFAULTS);
CREATE INDEX ON outbox_no_pk (position) WHERE sent_at IS NULL;
CREATE INDEX ON outbox_no_pk (ordering_key, position) WHERE sent_at IS NULL;
