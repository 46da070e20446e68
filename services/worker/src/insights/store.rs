//! The insights' SQL: the entries' rows, the users' locked totals, the recounts.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use domain::ids::UserId;
use sqlx::PgConnection;

use super::totals::Totals;
use super::types::{Activity, DAY_COLUMNS, EntryInsightDay, EntryInsights, INSIGHTS_COLUMNS};

/// Write the entries' rows in one statement. The version guard repeats the rule the fold
/// applied (the rows are locked through their authors, so it always holds).
pub(super) async fn upsert_activity(
    conn: &mut PgConnection,
    rows: &[&Activity],
) -> Result<u64, sqlx::Error> {
    let written = sqlx::query(
        "INSERT INTO journal_entry_activity
                (journal_entry_id, author_user_id, team_id, entry_created_at, message_id, version,
                 word_count, entry_date, created_local_date, created_local_hour, deleted)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::text[],
                              $6::bigint[], $7::int[], $8::date[], $9::date[], $10::smallint[],
                              $11::bool[])
         ON CONFLICT (journal_entry_id) DO UPDATE SET
             message_id = EXCLUDED.message_id,
             version = EXCLUDED.version,
             deleted = EXCLUDED.deleted,
             word_count = EXCLUDED.word_count,
             entry_date = EXCLUDED.entry_date,
             entry_created_at = EXCLUDED.entry_created_at,
             created_local_date = EXCLUDED.created_local_date,
             created_local_hour = EXCLUDED.created_local_hour,
             updated_at = now()
         WHERE journal_entry_activity.version < EXCLUDED.version",
    )
    .bind(
        rows.iter()
            .map(|row| row.journal_entry_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.author_user_id)
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|row| row.team_id).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|row| row.entry_created_at)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.message_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|row| row.version).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.word_count).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.entry_date).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|row| row.created_local_date)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.created_local_hour)
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|row| row.deleted).collect::<Vec<_>>())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(written)
}
/// The users' insights rows, created (empty, version 0) if missing, locked for the
/// transaction — in user id order, so batches that share users never deadlock.
pub(crate) async fn lock_insights(
    conn: &mut PgConnection,
    users: &[UserId],
) -> Result<BTreeMap<UserId, EntryInsights>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO entry_insights (user_id)
         SELECT user_id FROM unnest($1::uuid[]) AS users(user_id) ORDER BY user_id
         ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(users)
    .execute(&mut *conn)
    .await?;
    let rows: Vec<EntryInsights> = sqlx::query_as(&format!(
        "SELECT {INSIGHTS_COLUMNS} FROM entry_insights WHERE user_id = ANY($1)
          ORDER BY user_id FOR UPDATE"
    ))
    .bind(users)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.user_id, row)).collect())
}

/// Recount the given (user, day) pairs; write the day rows that changed (a tombstone when a
/// day became empty) and return them, by user and day.
pub(super) async fn refresh_days(
    conn: &mut PgConnection,
    days: &BTreeSet<(UserId, NaiveDate)>,
) -> Result<Vec<EntryInsightDay>, sqlx::Error> {
    if days.is_empty() {
        return Ok(Vec::new());
    }
    let counts: Vec<(UserId, NaiveDate, i64, i64)> = sqlx::query_as(
        "SELECT d.user_id, d.day, count(a.journal_entry_id), coalesce(sum(a.word_count), 0)::bigint
           FROM unnest($1::uuid[], $2::date[]) AS d(user_id, day)
           LEFT JOIN journal_entry_activity a
             ON a.author_user_id = d.user_id
            AND coalesce(a.entry_date, a.created_local_date) = d.day
            AND NOT a.deleted
          GROUP BY d.user_id, d.day",
    )
    .bind(days.iter().map(|(user, _)| *user).collect::<Vec<_>>())
    .bind(days.iter().map(|(_, day)| *day).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let (live, emptied): (Vec<_>, Vec<_>) = counts
        .into_iter()
        .partition(|(_, _, entry_count, _)| *entry_count > 0);
    let mut written: Vec<EntryInsightDay> = Vec::new();
    if !live.is_empty() {
        written.extend(
            sqlx::query_as::<_, EntryInsightDay>(&format!(
                "INSERT INTO entry_insight_days (user_id, day, entry_count, word_count)
                 SELECT * FROM unnest($1::uuid[], $2::date[], $3::int[], $4::bigint[])
                 ON CONFLICT (user_id, day) DO UPDATE SET
                     entry_count = EXCLUDED.entry_count, word_count = EXCLUDED.word_count,
                     deleted_at = NULL, updated_at = now(),
                     version = entry_insight_days.version + 1
                 WHERE entry_insight_days.entry_count <> EXCLUDED.entry_count
                    OR entry_insight_days.word_count <> EXCLUDED.word_count
                    OR entry_insight_days.deleted_at IS NOT NULL
                 RETURNING {DAY_COLUMNS}"
            ))
            .bind(live.iter().map(|(user, ..)| *user).collect::<Vec<_>>())
            .bind(live.iter().map(|(_, day, ..)| *day).collect::<Vec<_>>())
            .bind(
                live.iter()
                    .map(|(_, _, count, _)| i32::try_from(*count).unwrap_or(i32::MAX))
                    .collect::<Vec<_>>(),
            )
            .bind(live.iter().map(|(.., words)| *words).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await?,
        );
    }
    if !emptied.is_empty() {
        written.extend(
            sqlx::query_as::<_, EntryInsightDay>(
                "UPDATE entry_insight_days d
                    SET entry_count = 0, word_count = 0, deleted_at = now(), updated_at = now(),
                        version = d.version + 1
                   FROM unnest($1::uuid[], $2::date[]) AS e(user_id, day)
                  WHERE d.user_id = e.user_id AND d.day = e.day AND d.deleted_at IS NULL
                  RETURNING d.user_id, d.day, d.entry_count, d.word_count, d.created_at,
                            d.updated_at, d.deleted_at, d.version",
            )
            .bind(emptied.iter().map(|(user, ..)| *user).collect::<Vec<_>>())
            .bind(emptied.iter().map(|(_, day, ..)| *day).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await?,
        );
    }
    written.sort_by_key(|row| (row.user_id, row.day));
    Ok(written)
}

/// Recompute the users' totals from their day rows and entries; write the ones that changed
/// and return them.
pub(super) async fn refresh_totals(
    conn: &mut PgConnection,
    current: &[&EntryInsights],
) -> Result<Vec<EntryInsights>, sqlx::Error> {
    if current.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<UserId> = current.iter().map(|row| row.user_id).collect();
    let days: Vec<(UserId, NaiveDate, i32, i64)> = sqlx::query_as(
        "SELECT user_id, day, entry_count, word_count FROM entry_insight_days
          WHERE user_id = ANY($1) AND deleted_at IS NULL ORDER BY user_id, day",
    )
    .bind(&users)
    .fetch_all(&mut *conn)
    .await?;
    let hours: Vec<(UserId, i16, i64)> = sqlx::query_as(
        "SELECT author_user_id, created_local_hour, count(*) FROM journal_entry_activity
          WHERE author_user_id = ANY($1) AND NOT deleted AND created_local_hour IS NOT NULL
          GROUP BY author_user_id, created_local_hour",
    )
    .bind(&users)
    .fetch_all(&mut *conn)
    .await?;
    let mut changed: Vec<(UserId, Totals)> = Vec::new();
    for row in current {
        let user_days: Vec<(NaiveDate, i32, i64)> = days
            .iter()
            .filter(|(user, ..)| *user == row.user_id)
            .map(|(_, day, count, words)| (*day, *count, *words))
            .collect();
        let user_hours = hours
            .iter()
            .filter(|(user, ..)| *user == row.user_id)
            .map(|(_, hour, count)| (*hour, *count));
        let next = Totals::compute(&user_days, user_hours);
        if row.version == 0 || Totals::of(row) != next {
            changed.push((row.user_id, next));
        }
    }
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    let column = |value: fn(&Totals) -> i32| -> Vec<i32> {
        changed.iter().map(|(_, totals)| value(totals)).collect()
    };
    let histograms: Vec<String> = changed
        .iter()
        .map(|(_, totals)| {
            let counts: Vec<String> = totals
                .hour_histogram
                .iter()
                .map(ToString::to_string)
                .collect();
            format!("{{{}}}", counts.join(","))
        })
        .collect();
    let mut updated: Vec<EntryInsights> = sqlx::query_as(
        "UPDATE entry_insights i SET
             entry_count = t.entry_count, word_count = t.word_count, active_days = t.active_days,
             first_entry_day = t.first_entry_day, last_entry_day = t.last_entry_day,
             current_streak_days = t.current_streak_days,
             longest_streak_days = t.longest_streak_days,
             hour_histogram = t.hour_histogram::int[], updated_at = now(), version = i.version + 1
           FROM unnest($1::uuid[], $2::int[], $3::bigint[], $4::int[], $5::date[], $6::date[],
                       $7::int[], $8::int[], $9::text[])
                AS t(user_id, entry_count, word_count, active_days, first_entry_day,
                     last_entry_day, current_streak_days, longest_streak_days, hour_histogram)
          WHERE i.user_id = t.user_id
          RETURNING i.user_id, i.entry_count, i.word_count, i.active_days, i.first_entry_day,
                    i.last_entry_day, i.current_streak_days, i.longest_streak_days,
                    i.hour_histogram, i.created_at, i.updated_at, i.version",
    )
    .bind(changed.iter().map(|(user, _)| *user).collect::<Vec<_>>())
    .bind(column(|totals| totals.entry_count))
    .bind(
        changed
            .iter()
            .map(|(_, totals)| totals.word_count)
            .collect::<Vec<_>>(),
    )
    .bind(column(|totals| totals.active_days))
    .bind(
        changed
            .iter()
            .map(|(_, totals)| totals.first_entry_day)
            .collect::<Vec<_>>(),
    )
    .bind(
        changed
            .iter()
            .map(|(_, totals)| totals.last_entry_day)
            .collect::<Vec<_>>(),
    )
    .bind(column(|totals| totals.current_streak_days))
    .bind(column(|totals| totals.longest_streak_days))
    .bind(histograms)
    .fetch_all(&mut *conn)
    .await?;
    updated.sort_by_key(|row| row.user_id);
    Ok(updated)
}
