#!/bin/bash
# How fast a relay could read the WAL-native outbox: emit CREATES pairs of messages (the
# create's event and changeset, as run.sh writes them) with pg_logical_emit_message, then read
# them from a pgoutput slot over a plain SQL connection, as a relay without the replication
# protocol would: peek (nothing is consumed before NATS acks), then advance the slot past
# what was published. Needs a PRIVATE cluster with wal_level=logical (see run.sh's header):
#   psql ... -c "ALTER SYSTEM SET wal_level = logical"; pg_ctl -D /tmp/probe restart
# The slot is dropped at the end (a forgotten slot keeps WAL forever).
set -euo pipefail
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-54329} PGUSER=${PGUSER:-postgres}
export PGDATABASE=${PGDATABASE:-outbox_probe}
creates=${CREATES:-20000}
[ "$(psql -Atc 'SHOW wal_level')" = logical ] || { echo "wal_level must be logical" >&2; exit 1; }
event="'\\x$(printf 'ab%.0s' $(seq 250))'::bytea"
changeset="'\\x$(printf 'cd%.0s' $(seq 700))'::bytea"
file=$(mktemp)
trap 'rm -f "$file"; psql -qAtc "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '"'"'relay_probe'"'"'" >/dev/null' EXIT
echo "SELECT pg_logical_emit_message(true, 'events.journal_entry.created', $event),
             pg_logical_emit_message(true, 'changes.user.u', $changeset);" >"$file"
psql -qc "CREATE PUBLICATION outbox_probe_pub" 2>/dev/null || true
psql -qAtc "SELECT pg_create_logical_replication_slot('relay_probe', 'pgoutput')" >/dev/null
pgbench -n -f "$file" -c 4 -j 2 -t $((creates / 4)) 2>&1 | grep '^tps'
options="'proto_version', '1', 'publication_names', 'outbox_probe_pub', 'messages', 'true'"
start=$(date +%s.%N)
read -r messages bytes last_lsn < <(psql -Atc "SELECT count(*) FILTER (WHERE get_byte(data, 0) = 77),
        sum(length(data)), max(lsn) FROM pg_logical_slot_peek_binary_changes('relay_probe', NULL, NULL, $options)" | tr '|' ' ')
peeked=$(date +%s.%N)
psql -qAtc "SELECT pg_replication_slot_advance('relay_probe', '$last_lsn')" >/dev/null
left=$(psql -Atc "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('relay_probe', NULL, NULL, $options)")
echo "messages $messages bytes $bytes peek_seconds $(echo "$peeked - $start" | bc) left_after_advance $left"
