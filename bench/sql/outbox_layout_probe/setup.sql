-- Three outbox layouts side by side (docs/benchmarks.md, "Outbox layouts: WAL per create").
-- `outbox` is the bus's table as declared in shared/bus/schema.sql.
CREATE TABLE outbox (
    outbox_id uuid PRIMARY KEY,
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
CREATE INDEX outbox_unsent_idx ON outbox (position) WHERE sent_at IS NULL;
CREATE INDEX outbox_unsent_key_idx ON outbox (ordering_key, position) WHERE sent_at IS NULL;
-- One row per create carrying both messages (the event and the changeset).
CREATE TABLE outbox_combined (LIKE outbox INCLUDING ALL);
ALTER TABLE outbox_combined
    ADD COLUMN second_subject text, ADD COLUMN second_payload bytea,
    ADD COLUMN second_ordering_key text;
-- Two rows, no uuid primary key (the relay would delete by position).
CREATE TABLE outbox_no_pk (LIKE outbox INCLUDING DEFAULTS);
CREATE INDEX ON outbox_no_pk (position) WHERE sent_at IS NULL;
CREATE INDEX ON outbox_no_pk (ordering_key, position) WHERE sent_at IS NULL;
