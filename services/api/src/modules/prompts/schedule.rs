//! When a scheduled prompt is due: its local time in its zone, on its weekdays.

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::types::{Prompt, Schedule, parse_time};

/// The instant of local `date` `time` in `zone`; a time skipped by a DST change is taken an
/// hour later (when the clocks have moved on), an ambiguous one at its first occurrence.
pub(crate) fn local_instant(zone: Tz, date: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
    let local = NaiveDateTime::new(date, time);
    zone.from_local_datetime(&local)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(local + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|at| at.with_timezone(&Utc))
}

/// The first occurrence of `schedule` within `[start, end)`, if any.
fn occurrence_within(
    schedule: &Schedule,
    day: NaiveDate,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let zone: Tz = schedule.timezone.parse().ok()?;
    let time = parse_time(&schedule.time)?;
    // Zones are at most 26 hours apart: the schedule's local dates that can fall in the
    // caller's day are within two days of it.
    let first = day.checked_sub_days(Days::new(2))?;
    (0..5)
        .filter_map(|offset| first.checked_add_days(Days::new(offset)))
        .filter(|date| {
            let weekday = i16::try_from(date.weekday().number_from_monday()).unwrap_or(0);
            schedule.weekdays.contains(&weekday)
        })
        .filter_map(|date| local_instant(zone, date, time))
        .find(|at| *at >= start && *at < end)
}

/// The prompt for `day` among `prompts` (see the module docs), `caller_zone` being the
/// caller's time zone.
pub fn pick_for_day(prompts: &[Prompt], day: NaiveDate, caller_zone: Tz) -> Option<&Prompt> {
    let start = local_instant(caller_zone, day, NaiveTime::MIN)?;
    let end = local_instant(caller_zone, day.succ_opt()?, NaiveTime::MIN)?;
    let due = prompts
        .iter()
        .filter(|prompt| prompt.deleted_at.is_none())
        .filter_map(|prompt| {
            let schedule = prompt.schedule.as_ref()?;
            occurrence_within(schedule, day, start, end).map(|at| (at, prompt))
        })
        .min_by_key(|(at, prompt)| (*at, prompt.created_at, prompt.prompt_id));
    if let Some((_, prompt)) = due {
        return Some(prompt);
    }
    let mut unscheduled: Vec<&Prompt> = prompts
        .iter()
        .filter(|prompt| prompt.deleted_at.is_none() && prompt.schedule.is_none())
        .collect();
    if unscheduled.is_empty() {
        return None;
    }
    unscheduled.sort_by_key(|prompt| prompt.prompt_id);
    let days = usize::try_from(day.num_days_from_ce()).unwrap_or(0);
    unscheduled.get(days % unscheduled.len()).copied()
}
