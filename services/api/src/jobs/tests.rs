#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;

use super::ApiJob;
use super::dispatch_prompts::due_occurrence;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

#[test]
fn occurrences_are_found_in_the_schedules_zone_within_the_look_back() {
    let nine = NaiveTime::from_hms_opt(9, 0, 0).unwrap();
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    // 2026-03-02 is a Monday; 09:00 in Berlin (CET) is 08:00 UTC.
    let monday = [1];
    let created = at("2026-01-01T00:00:00Z");
    let hour = Duration::from_secs(3600);
    // The occurrence of the 09:00 Berlin schedule on `weekdays` that is due at `tick`.
    let due_at = |weekdays: &[i16], tick: &str, not_before| {
        due_occurrence(nine, berlin, weekdays, at(tick), hour, not_before)
    };
    assert_eq!(
        due_at(&monday, "2026-03-02T08:00:00Z", created),
        Some((
            NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
            at("2026-03-02T08:00:00Z")
        ))
    );
    // Still due 59 minutes late (a caught-up run), not an hour and more.
    assert!(due_at(&monday, "2026-03-02T08:59:00Z", created).is_some());
    assert!(due_at(&monday, "2026-03-02T09:00:00Z", created).is_none());
    // Not before its time, not on another weekday, not before the prompt existed.
    assert!(due_at(&monday, "2026-03-02T07:59:00Z", created).is_none());
    assert!(due_at(&[2], "2026-03-02T08:00:00Z", created).is_none());
    assert!(due_at(&monday, "2026-03-02T08:30:00Z", at("2026-03-02T08:10:00Z")).is_none());
}

#[test]
fn a_late_evening_occurrence_counts_for_its_local_date() {
    // 23:30 in Los Angeles on Monday 2026-03-02 is 07:30 UTC on Tuesday.
    let time = NaiveTime::from_hms_opt(23, 30, 0).unwrap();
    let zone: Tz = "America/Los_Angeles".parse().unwrap();
    let found = due_occurrence(
        time,
        zone,
        &[1],
        at("2026-03-03T07:31:00Z"),
        Duration::from_secs(3600),
        at("2026-01-01T00:00:00Z"),
    );
    assert_eq!(
        found,
        Some((
            NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
            at("2026-03-03T07:30:00Z")
        ))
    );
}

#[test]
fn job_names_round_trip() {
    for job in [
        ApiJob::DispatchDuePrompts,
        ApiJob::PurgeExpiredSessions,
        ApiJob::RollOverUsage,
        ApiJob::PurgeRetention,
        ApiJob::CleanUpAbandonedUploads,
    ] {
        assert_eq!(ApiJob::from_name(job.name()), Some(job));
    }
    assert_eq!(ApiJob::from_name("nonsense"), None);
}
