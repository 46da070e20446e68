#!/bin/bash
# WAL per create of the outbox part of the api's write alone, by layout: today's two rows,
# one combined row, two rows without the uuid primary key, and two WAL-native messages
# (pg_logical_emit_message). No entry row, no relay reads: the part alone. Run against a
# PRIVATE cluster (WAL is cluster-wide; another writer on it would count):
#   initdb -D /tmp/probe -U postgres; pg_ctl -D /tmp/probe -o "-p 54329 -k /tmp" start
#   createdb -h 127.0.0.1 -p 54329 -U postgres outbox_probe
#   psql -h 127.0.0.1 -p 54329 -U postgres -d outbox_probe -f setup.sql
#   ./run.sh
# Payloads as the create writes them: a 250-byte event, a 700-byte changeset (a 240-character
# entry as JSON), a 100-byte header object.
set -euo pipefail
cd "$(dirname "$0")"
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-54329} PGUSER=${PGUSER:-postgres}
export PGDATABASE=${PGDATABASE:-outbox_probe}
creates=${CREATES:-5000}
event="'\\x$(printf 'ab%.0s' $(seq 250))'::bytea"
changeset="'\\x$(printf 'cd%.0s' $(seq 700))'::bytea"
headers="'{\"traceparent\":\"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\",\"name\":\"journal_entry.created\"}'"
two_rows="INSERT INTO outbox (outbox_id, subject, payload, headers, ordering_key) VALUES
  (gen_random_uuid(), 'events.journal_entry.created', $event, $headers, 'k'),
  (gen_random_uuid(), 'changes.user.u', $changeset, $headers, 'changes.user.u');"
combined="INSERT INTO outbox_combined (outbox_id, subject, payload, headers, ordering_key,
    second_subject, second_payload, second_ordering_key) VALUES
  (gen_random_uuid(), 'events.journal_entry.created', $event, $headers, 'k',
   'changes.user.u', $changeset, 'changes.user.u');"
no_pk="${two_rows/INSERT INTO outbox /INSERT INTO outbox_no_pk }"
logical="SELECT pg_logical_emit_message(true, 'events.journal_entry.created', $event),
                pg_logical_emit_message(true, 'changes.user.u', $changeset);"
lsn() { psql -Atc "SELECT pg_current_wal_lsn()"; }
probe() { # layout, statement, table to empty afterwards (the relay's delete) or -
  local layout=$1 statement=$2 table=$3 file
  file=$(mktemp)
  echo "$statement" >"$file"
  psql -q -c "CHECKPOINT"
  local start mid end
  start=$(lsn)
  pgbench -n -f "$file" -c 4 -j 2 -t $((creates / 4)) >/dev/null 2>&1
  mid=$(lsn)
  [ "$table" != - ] && psql -q -c "DELETE FROM $table"
  end=$(lsn)
  psql -Atc "SELECT '$layout', round(pg_wal_lsn_diff('$mid', '$start') / $creates),
                    round(pg_wal_lsn_diff('$end', '$mid') / $creates)" | tr '|' ' '
  rm -f "$file"
}
echo "layout insert_wal_b_per_create delete_wal_b_per_create"
probe two-rows "$two_rows" outbox
probe one-combined-row "$combined" outbox_combined
probe two-rows-no-pk "$no_pk" outbox_no_pk
probe logical-messages "$logical" -
