#![allow(clippy::unwrap_used)]

use chrono::{DateTime, NaiveDate};
use chrono_tz::Tz;
use domain::ids::{PromptId, UserId};
use uuid::Uuid;

use super::schedule::pick_for_day;
use super::types::{Prompt, Schedule};

fn prompt(id: u128, schedule: Option<(&str, &str, &[i16])>) -> Prompt {
    let at = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
    Prompt {
        prompt_id: PromptId::from_uuid(Uuid::from_u128(id)),
        owner_user_id: Some(UserId::from_uuid(Uuid::from_u128(99))),
        team_id: None,
        author_user_id: UserId::from_uuid(Uuid::from_u128(99)),
        text: format!("prompt {id}"),
        schedule: schedule.map(|(time, timezone, weekdays)| Schedule {
            time: time.to_owned(),
            timezone: timezone.to_owned(),
            weekdays: weekdays.to_vec(),
        }),
        created_at: at.into(),
        updated_at: at.into(),
        deleted_at: None,
        version: 1,
    }
}

fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

#[test]
fn scheduled_prompts_are_due_on_their_weekdays_earliest_first() {
    // 2025-06-02 is a Monday.
    let prompts = [
        prompt(1, Some(("18:00", "UTC", &[1]))),
        prompt(2, Some(("08:00", "UTC", &[1, 3]))),
        prompt(3, Some(("07:00", "UTC", &[2]))),
        prompt(4, None),
    ];
    let monday = pick_for_day(&prompts, date("2025-06-02"), Tz::UTC).unwrap();
    assert_eq!(monday.prompt_id.uuid(), Uuid::from_u128(2));
    let tuesday = pick_for_day(&prompts, date("2025-06-03"), Tz::UTC).unwrap();
    assert_eq!(tuesday.prompt_id.uuid(), Uuid::from_u128(3));
    let friday = pick_for_day(&prompts, date("2025-06-06"), Tz::UTC).unwrap();
    assert_eq!(friday.prompt_id.uuid(), Uuid::from_u128(4));
}

#[test]
fn schedules_are_evaluated_in_their_own_zone() {
    // Monday 23:30 in Los Angeles is Tuesday 08:30 in Berlin.
    let prompts = [prompt(1, Some(("23:30", "America/Los_Angeles", &[1])))];
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    assert!(pick_for_day(&prompts, date("2025-06-02"), berlin).is_none());
    assert!(pick_for_day(&prompts, date("2025-06-03"), berlin).is_some());
    let los_angeles: Tz = "America/Los_Angeles".parse().unwrap();
    assert!(pick_for_day(&prompts, date("2025-06-02"), los_angeles).is_some());
}

#[test]
fn unscheduled_prompts_rotate_by_day_deterministically() {
    let prompts = [prompt(3, None), prompt(1, None), prompt(2, None)];
    let day = date("2025-06-02");
    let first = pick_for_day(&prompts, day, Tz::UTC).unwrap().prompt_id;
    assert_eq!(
        pick_for_day(&prompts, day, Tz::UTC).unwrap().prompt_id,
        first
    );
    let next = pick_for_day(&prompts, day.succ_opt().unwrap(), Tz::UTC)
        .unwrap()
        .prompt_id;
    assert_ne!(first, next);
    assert!(pick_for_day(&[], day, Tz::UTC).is_none());
}
