#!/bin/bash
# WAL and commits per create of the api's write alone, old shape against the one-statement
# create (docs/benchmarks.md, "Create path: one statement"). Run against a PRIVATE cluster
# (WAL is cluster-wide): initdb, start it on $PGPORT, then once
#   createdb probe; psql -d probe -c 'create schema api'
#   for f in migrations/api/*.sql; do PGOPTIONS=-csearch_path=api psql -d probe -f $f; done
#   PGOPTIONS=-csearch_path=api psql -d probe -f bench/sql/create_wal_probe/setup.sql
# and per shape:
#   bench/sql/create_wal_probe/run.sh old-4-statements old_4_statements.sql gen_random_uuid
#   bench/sql/create_wal_probe/run.sh one-statement-v7 one_statement_v7.sql uuid7
set -euo pipefail
cd "$(dirname "$0")"
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-54329} PGUSER=${PGUSER:-postgres}
export PGDATABASE=probe PGOPTIONS="-c search_path=api"
variant=$1; script=$2; idfn=$3
psql -q -c "TRUNCATE attachments, journal_entries, outbox CASCADE"
# 200,000 existing entries (ids of the shape's kind), so the indexes are not tiny.
psql -q -c "INSERT INTO journal_entries (journal_entry_id, author_user_id, title, content, created_at)
  SELECT $idfn(), (SELECT user_id FROM bench_users WHERE n = 1 + g % 200), 'bench',
         repeat('lorem ipsum ', 20) || g, now() - make_interval(secs => 200000 - g)
    FROM generate_series(1, 200000) g"
psql -q -c "VACUUM ANALYZE journal_entries" -c "VACUUM outbox" -c "CHECKPOINT"
for phase in after-checkpoint warm; do
  read -r lsn0 c0 <<<"$(psql -Atc "select pg_current_wal_lsn(), xact_commit from pg_stat_database where datname='probe'" | tr '|' ' ')"
  out=$(pgbench -n -f "$script" -c 8 -j 2 -t 2500 2>&1)
  sleep 1.5
  read -r lsn1 c1 <<<"$(psql -Atc "select pg_current_wal_lsn(), xact_commit from pg_stat_database where datname='probe'" | tr '|' ' ')"
  wal=$(psql -Atc "select pg_wal_lsn_diff('$lsn1','$lsn0')")
  n=$(echo "$out" | grep -oP 'actually processed: \K[0-9]+')
  # The two psql reads of xact_commit count as 2 commits.
  echo "$variant $phase creates=$n wal_per_create=$((${wal%.*} / n)) commits_per_create=$(echo "scale=3; ($c1 - $c0 - 2) / $n" | bc)"
done
