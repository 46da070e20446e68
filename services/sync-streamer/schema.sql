-- The declared schema of the `sync` schema: the desired end state, the source of truth.
-- Edit this file, then `cargo xtask db g sync <name>` writes the backward-compatible migration
-- (see docs/migrations.md). Unqualified names resolve to the `sync` schema.
-- The bus's tables (outbox, dead letters, processed messages) are declared once, in
-- shared/bus/schema.sql, which comes first in every schema's declaration.

-- The sync read model (ARCHITECTURE §5): the latest state of every synced row, per scope that
-- can see it. A membership is visible in two scopes (the team's and the member's), so each
-- scope keeps its own copy. Written only by the materializer (one leader at a time), in stream
-- order; `seq` is the CHANGES stream sequence of the changeset that wrote this copy, so a
-- client's cursor selects exactly the copies that changed after it.
CREATE TABLE rows (
    scope text NOT NULL,
    table_name text NOT NULL,
    row_id text NOT NULL,
    -- The row's version; an older or equal version never overwrites a newer one (replays).
    version bigint NOT NULL,
    seq bigint NOT NULL,
    -- A soft-deleted row: the tombstone, kept until the retention purges it.
    deleted boolean NOT NULL,
    -- The row as clients receive it (camelCase JSON written by the api).
    data json NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, table_name, row_id)
);
-- Catch-up: a scope's rows after a cursor, in stream order.
CREATE INDEX rows_scope_seq_idx ON rows (scope, seq);
-- Tombstone purge.
CREATE INDEX rows_tombstones_idx ON rows (changed_at) WHERE deleted;

-- The materializer's progress: every changeset up to `watermark` is applied. Cursors below
-- `horizon` are expired: tombstones they may not have seen were purged.
CREATE TABLE materializer_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    watermark bigint NOT NULL DEFAULT 0,
    horizon bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Leader leases: the materializer runs only on the replica holding the `materializer` lease.
-- Its holder renews it inside every batch transaction (fencing: a replica that lost the
-- lease cannot commit a batch) and on a timer while idle.
CREATE TABLE leases (
    name text PRIMARY KEY,
    holder uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now()
);
