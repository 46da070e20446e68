//! A user's totals from their days and entries, and their streaks.

use chrono::NaiveDate;

use super::types::{EntryInsights, HOURS};

/// The derived part of [`EntryInsights`], to tell whether anything changed.
#[derive(Debug, PartialEq)]
pub(super) struct Totals {
    pub(super) entry_count: i32,
    pub(super) word_count: i64,
    pub(super) active_days: i32,
    pub(super) first_entry_day: Option<NaiveDate>,
    pub(super) last_entry_day: Option<NaiveDate>,
    pub(super) current_streak_days: i32,
    pub(super) longest_streak_days: i32,
    pub(super) hour_histogram: Vec<i32>,
}

impl Totals {
    /// From a user's live days (`(day, entries, words)`, ascending) and their live entries
    /// counted by the hour they were written.
    pub(super) fn compute(
        days: &[(NaiveDate, i32, i64)],
        hours: impl IntoIterator<Item = (i16, i64)>,
    ) -> Self {
        let mut hour_histogram = vec![0i32; HOURS];
        for (hour, count) in hours {
            if let Some(slot) = usize::try_from(hour)
                .ok()
                .and_then(|hour| hour_histogram.get_mut(hour))
            {
                *slot = i32::try_from(count).unwrap_or(i32::MAX);
            }
        }
        let day_list: Vec<NaiveDate> = days.iter().map(|(day, ..)| *day).collect();
        let streaks = Streaks::of(&day_list);
        Self {
            entry_count: days
                .iter()
                .fold(0i32, |sum, (_, count, _)| sum.saturating_add(*count)),
            word_count: days
                .iter()
                .fold(0i64, |sum, (.., words)| sum.saturating_add(*words)),
            active_days: i32::try_from(days.len()).unwrap_or(i32::MAX),
            first_entry_day: day_list.first().copied(),
            last_entry_day: day_list.last().copied(),
            current_streak_days: streaks.current,
            longest_streak_days: streaks.longest,
            hour_histogram,
        }
    }

    pub(super) fn of(insights: &EntryInsights) -> Self {
        Self {
            entry_count: insights.entry_count,
            word_count: insights.word_count,
            active_days: insights.active_days,
            first_entry_day: insights.first_entry_day,
            last_entry_day: insights.last_entry_day,
            current_streak_days: insights.current_streak_days,
            longest_streak_days: insights.longest_streak_days,
            hour_histogram: insights.hour_histogram.clone(),
        }
    }
}

/// Runs of consecutive days.
#[derive(Debug, PartialEq, Eq)]
struct Streaks {
    /// The run that ends at the last day.
    current: i32,
    longest: i32,
}

impl Streaks {
    /// `days` sorted ascending, without duplicates.
    fn of(days: &[NaiveDate]) -> Self {
        let mut longest = 0;
        let mut run = 0;
        let mut previous: Option<NaiveDate> = None;
        for day in days {
            run = match previous {
                Some(previous) if previous.succ_opt() == Some(*day) => run + 1,
                _ => 1,
            };
            longest = longest.max(run);
            previous = Some(*day);
        }
        Self {
            current: run,
            longest,
        }
    }
}
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn days(list: &[&str]) -> Vec<NaiveDate> {
        list.iter()
            .map(|day| NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap())
            .collect()
    }

    #[test]
    fn streaks_count_consecutive_days() {
        assert_eq!(
            Streaks::of(&[]),
            Streaks {
                current: 0,
                longest: 0
            }
        );
        assert_eq!(
            Streaks::of(&days(&["2026-01-01"])),
            Streaks {
                current: 1,
                longest: 1
            }
        );
        // Across a month end; a gap resets the current run.
        assert_eq!(
            Streaks::of(&days(&[
                "2026-01-30",
                "2026-01-31",
                "2026-02-01",
                "2026-02-03",
                "2026-02-04"
            ])),
            Streaks {
                current: 2,
                longest: 3
            }
        );
        assert_eq!(
            Streaks::of(&days(&[
                "2026-03-01",
                "2026-03-05",
                "2026-03-06",
                "2026-03-07"
            ])),
            Streaks {
                current: 3,
                longest: 3
            }
        );
    }
}
