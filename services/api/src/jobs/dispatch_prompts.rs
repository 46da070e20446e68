//! `dispatch-due-prompts`: one `prompt.due` per recipient of every scheduled prompt whose
//! occurrence fell in the hour up to the tick, at most once per prompt and local date.

use domain::ids::{PromptId, TeamId, UserId};
use std::time::Duration;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use messages::journal::v1::PromptDue;
use sqlx::PgPool;

use super::JobReport;
use crate::http::error::ApiError;
use crate::modules::prompts::schedule::local_instant;

/// How far back from its tick a dispatch looks for occurrences it has not sent.
pub const DISPATCH_LOOKBACK: Duration = Duration::from_secs(3600);
/// Dispatch records are kept this long (far beyond any redelivery of a dispatch task).
pub(crate) const DISPATCH_RECORD_DAYS: i32 = 30;

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ScheduledPrompt {
    pub(crate) prompt_id: PromptId,
    pub(crate) owner_user_id: Option<UserId>,
    pub(crate) team_id: Option<TeamId>,
    pub(crate) text: String,
    pub(crate) schedule_time: NaiveTime,
    pub(crate) schedule_timezone: String,
    pub(crate) schedule_weekdays: Vec<i16>,
    pub(crate) created_at: DateTime<Utc>,
}

/// The occurrence of a schedule in `(tick - lookback, tick]`, not before `not_before`: its
/// local date and instant.
pub fn due_occurrence(
    time: NaiveTime,
    zone: Tz,
    weekdays: &[i16],
    tick: DateTime<Utc>,
    lookback: Duration,
    not_before: DateTime<Utc>,
) -> Option<(NaiveDate, DateTime<Utc>)> {
    let window_start = tick - chrono::Duration::from_std(lookback).ok()?;
    let today = zone.from_utc_datetime(&tick.naive_utc()).date_naive();
    // The look-back is at most a day, so the occurrence is on the tick's local date or the
    // one before; the later one wins.
    [Some(today), today.checked_sub_days(Days::new(1))]
        .into_iter()
        .flatten()
        .filter(|date| {
            let weekday = i16::try_from(date.weekday().number_from_monday()).unwrap_or(0);
            weekdays.contains(&weekday)
        })
        .filter_map(|date| local_instant(zone, date, time).map(|at| (date, at)))
        .find(|(_, at)| *at > window_start && *at <= tick && *at >= not_before)
}

/// See the module docs. `tick` is the run's scheduled time.
pub async fn dispatch_due_prompts(db: &PgPool, tick: DateTime<Utc>) -> Result<JobReport, ApiError> {
    let scheduled: Vec<ScheduledPrompt> = sqlx::query_as(
        "SELECT prompt_id, owner_user_id, team_id, text, schedule_time, schedule_timezone,
                schedule_weekdays, created_at
           FROM prompts
          WHERE deleted_at IS NULL AND schedule_time IS NOT NULL",
    )
    .fetch_all(db)
    .await?;
    let mut prompts = 0;
    let mut notifications = 0;
    for prompt in scheduled {
        let Ok(zone) = prompt.schedule_timezone.parse::<Tz>() else {
            tracing::warn!(prompt_id = %prompt.prompt_id, zone = %prompt.schedule_timezone, "unknown time zone; prompt skipped");
            continue;
        };
        let Some((local_date, scheduled_at)) = due_occurrence(
            prompt.schedule_time,
            zone,
            &prompt.schedule_weekdays,
            tick,
            DISPATCH_LOOKBACK,
            prompt.created_at,
        ) else {
            continue;
        };
        if let Some(sent) = dispatch_one(db, &prompt, local_date, scheduled_at).await? {
            prompts += 1;
            notifications += sent;
        }
    }
    Ok(JobReport::DispatchDuePrompts {
        prompts,
        notifications,
    })
}

/// One occurrence, in one transaction: the dispatch record and a `prompt.due` per recipient.
/// `None` when it was dispatched before.
async fn dispatch_one(
    db: &PgPool,
    prompt: &ScheduledPrompt,
    local_date: NaiveDate,
    scheduled_at: DateTime<Utc>,
) -> Result<Option<u64>, ApiError> {
    let mut tx = db.begin().await?;
    let first = sqlx::query(
        "INSERT INTO prompt_dispatches (prompt_id, local_date, scheduled_at, recipients)
         VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
    )
    .bind(prompt.prompt_id)
    .bind(local_date)
    .bind(scheduled_at)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !first {
        return Ok(None);
    }
    // Recipients as of now: the live owner, or the team's active members (live accounts).
    let recipients: Vec<(UserId, String, String, Option<String>)> =
        match (prompt.owner_user_id, prompt.team_id) {
            (_, Some(team_id)) => {
                sqlx::query_as(
                    "SELECT u.user_id, u.email, u.name, t.name
                   FROM team_members m
                   JOIN teams t ON t.team_id = m.team_id
                   JOIN users u ON u.user_id = m.user_id
                  WHERE m.team_id = $1 AND m.deleted_at IS NULL AND t.deleted_at IS NULL
                    AND u.deleted_at IS NULL
                  ORDER BY u.user_id",
                )
                .bind(team_id)
                .fetch_all(&mut *tx)
                .await?
            }
            (Some(owner), None) => {
                sqlx::query_as(
                    "SELECT user_id, email, name, NULL::text FROM users
                  WHERE user_id = $1 AND deleted_at IS NULL",
                )
                .bind(owner)
                .fetch_all(&mut *tx)
                .await?
            }
            (None, None) => Vec::new(),
        };
    for (user_id, email, name, team_name) in &recipients {
        bus::outbox::emit(
            &mut tx,
            &PromptDue {
                prompt_id: prompt.prompt_id.to_string(),
                user_id: user_id.to_string(),
                email: email.clone(),
                name: name.clone(),
                prompt_text: prompt.text.clone(),
                team_id: prompt.team_id.map(|id| id.to_string()).unwrap_or_default(),
                team_name: team_name.clone().unwrap_or_default(),
                local_date: local_date.format("%Y-%m-%d").to_string(),
                scheduled_at_ms: scheduled_at.timestamp_millis(),
                timezone: prompt.schedule_timezone.clone(),
            },
        )
        .await?;
    }
    let count = recipients.len() as u64;
    sqlx::query(
        "UPDATE prompt_dispatches SET recipients = $3 WHERE prompt_id = $1 AND local_date = $2",
    )
    .bind(prompt.prompt_id)
    .bind(local_date)
    .bind(i32::try_from(count).unwrap_or(i32::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(count))
}

// ---- purges ---------------------------------------------------------------------------------
