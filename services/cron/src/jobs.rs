//! The scheduled jobs: names, default schedules, and the messages a run emits. Cron does no
//! domain work: each run hands the job to the service that owns the data (a task for the api,
//! or the `retention.purge_due` event every service handles for its own schema).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use messages::journal::v1::{
    CleanUpAbandonedUploads, DispatchDuePrompts, PurgeExpiredSessions, RetentionPurgeDue,
    RollOverUsage,
};
use sqlx::PgConnection;
use uuid::Uuid;

/// Every job the service knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    DispatchDuePrompts,
    PurgeExpiredSessions,
    PurgeRetention,
    RollOverUsage,
    CleanUpAbandonedUploads,
}

/// A job's fixed facts.
#[derive(Debug, Clone, Copy)]
pub struct JobSpec {
    pub kind: JobKind,
    /// Stable: `cron.jobs.job_name`, the `CRON_SCHEDULE_*` suffix, the api's `/cron/<job>`.
    pub name: &'static str,
    /// Six fields, seconds first (`sec min hour day-of-month month day-of-week`), UTC.
    pub default_schedule: &'static str,
    pub enabled_by_default: bool,
}

pub const JOBS: [JobSpec; 5] = [
    JobSpec {
        kind: JobKind::DispatchDuePrompts,
        name: "dispatch-due-prompts",
        default_schedule: "0 * * * * *",
        enabled_by_default: true,
    },
    JobSpec {
        kind: JobKind::PurgeExpiredSessions,
        name: "purge-expired-sessions",
        default_schedule: "0 7 * * * *",
        enabled_by_default: true,
    },
    JobSpec {
        kind: JobKind::PurgeRetention,
        name: "purge-retention",
        default_schedule: "0 30 3 * * *",
        enabled_by_default: true,
    },
    // Subscriptions renew monthly, each on its own day and time (its period end), so the job
    // runs hourly and rolls over whichever periods have ended: each within the hour.
    JobSpec {
        kind: JobKind::RollOverUsage,
        name: "roll-over-usage",
        default_schedule: "0 15 * * * *",
        enabled_by_default: true,
    },
    // The api expires attachments whose upload was never completed (docs/cdn.md).
    JobSpec {
        kind: JobKind::CleanUpAbandonedUploads,
        name: "clean-up-abandoned-uploads",
        default_schedule: "0 */5 * * * *",
        enabled_by_default: true,
    },
];

impl JobSpec {
    pub fn by_name(name: &str) -> Option<&'static JobSpec> {
        JOBS.iter().find(|spec| spec.name == name)
    }

    /// `CRON_SCHEDULE_DISPATCH_DUE_PROMPTS` for `dispatch-due-prompts`.
    pub fn schedule_variable(&self) -> String {
        format!(
            "CRON_SCHEDULE_{}",
            self.name.to_ascii_uppercase().replace('-', "_")
        )
    }
}

/// A parsed schedule (six fields, seconds first, evaluated in UTC).
#[derive(Clone)]
pub struct Schedule {
    text: String,
    cron: Cron,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.split_whitespace().count() != 6 {
            return Err(format!(
                "`{text}` is not a six-field cron expression (sec min hour day month weekday)"
            ));
        }
        // The same parser settings tokio-cron-scheduler uses, so both agree on every tick.
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(text)
            .map_err(|error| format!("`{text}` is not a valid cron expression: {error}"))?;
        Ok(Self {
            text: text.to_owned(),
            cron,
        })
    }
}

impl Schedule {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The latest tick at or before `at` (whole seconds).
    pub fn latest_tick(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let at = DateTime::from_timestamp(at.timestamp(), 0)?;
        self.cron.find_previous_occurrence(&at, true).ok()
    }

    /// How many ticks fall in `(after, until)`, counting at most `cap`.
    pub fn ticks_between(&self, after: DateTime<Utc>, until: DateTime<Utc>, cap: usize) -> usize {
        let Some(after) = DateTime::from_timestamp(after.timestamp(), 0) else {
            return 0;
        };
        self.cron
            .iter_after(after)
            .take_while(|tick| *tick < until)
            .take(cap)
            .count()
    }
}

/// A job as this replica runs it: its spec, its (possibly overridden) schedule, and whether
/// it is enabled.
#[derive(Debug, Clone)]
pub struct Job {
    pub spec: JobSpec,
    pub schedule: Schedule,
    pub enabled: bool,
}

impl Job {
    pub fn name(&self) -> &'static str {
        self.spec.name
    }
}

impl JobKind {
    /// Write the job's messages to the outbox in the caller's transaction; their outbox ids.
    pub async fn emit(
        self,
        conn: &mut PgConnection,
        job_run_id: Uuid,
        scheduled_for: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, bus::BusError> {
        let cron_run_id = job_run_id.to_string();
        let scheduled_for_ms = scheduled_for.timestamp_millis();
        let outbox_id = match self {
            Self::DispatchDuePrompts => {
                bus::outbox::emit(
                    conn,
                    &DispatchDuePrompts {
                        cron_run_id,
                        scheduled_for_ms,
                    },
                )
                .await?
            }
            Self::PurgeExpiredSessions => {
                bus::outbox::emit(
                    conn,
                    &PurgeExpiredSessions {
                        cron_run_id,
                        scheduled_for_ms,
                    },
                )
                .await?
            }
            Self::PurgeRetention => {
                bus::outbox::emit(
                    conn,
                    &RetentionPurgeDue {
                        cron_run_id,
                        scheduled_for_ms,
                    },
                )
                .await?
            }
            Self::RollOverUsage => {
                bus::outbox::emit(
                    conn,
                    &RollOverUsage {
                        cron_run_id,
                        scheduled_for_ms,
                    },
                )
                .await?
            }
            Self::CleanUpAbandonedUploads => {
                bus::outbox::emit(
                    conn,
                    &CleanUpAbandonedUploads {
                        cron_run_id,
                        scheduled_for_ms,
                    },
                )
                .await?
            }
        };
        Ok(vec![outbox_id])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn default_schedules_parse_and_names_are_unique() {
        for spec in JOBS {
            spec.default_schedule.parse::<Schedule>().unwrap();
            assert_eq!(JobSpec::by_name(spec.name).unwrap().kind, spec.kind);
        }
        assert_eq!(
            JOBS[0].schedule_variable(),
            "CRON_SCHEDULE_DISPATCH_DUE_PROMPTS"
        );
    }

    #[test]
    fn latest_tick_and_missed_ticks() {
        let hourly: Schedule = "0 7 * * * *".parse().unwrap();
        assert_eq!(
            hourly.latest_tick(at("2026-03-01T10:06:59.900Z")),
            Some(at("2026-03-01T09:07:00Z"))
        );
        assert_eq!(
            hourly.latest_tick(at("2026-03-01T10:07:00.300Z")),
            Some(at("2026-03-01T10:07:00Z"))
        );
        // Ticks strictly between 06:07 and 10:07: 07:07, 08:07, 09:07.
        assert_eq!(
            hourly.ticks_between(at("2026-03-01T06:07:00Z"), at("2026-03-01T10:07:00Z"), 100),
            3
        );
    }

    #[test]
    fn bad_schedules_say_why() {
        assert!(
            "* * * * *"
                .parse::<Schedule>()
                .unwrap_err()
                .contains("six-field")
        );
        assert!(
            "0 61 * * * *"
                .parse::<Schedule>()
                .unwrap_err()
                .contains("not a valid")
        );
    }
}
