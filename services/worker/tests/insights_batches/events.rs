//! The events the tests publish and the oracle of what they must leave.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as Days, NaiveDate, Utc};
use messages::journal::v1::JournalEntryFacts;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Created,
    Updated,
    Deleted,
    Restored,
}

/// One entry event as the api would emit it.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) kind: Kind,
    pub(crate) entry: Uuid,
    pub(crate) user: Uuid,
    pub(crate) version: i64,
    pub(crate) words: i32,
    pub(crate) entry_date: Option<NaiveDate>,
    pub(crate) local_date: NaiveDate,
    pub(crate) hour: i32,
    pub(crate) created: DateTime<Utc>,
}

impl Event {
    pub(crate) fn facts(&self) -> Option<JournalEntryFacts> {
        Some(JournalEntryFacts {
            word_count: self.words,
            entry_date: self.entry_date.map(|day| day.to_string()),
            created_local_date: self.local_date.to_string(),
            created_local_hour: self.hour,
            created_at_ms: self.created.timestamp_millis(),
        })
    }
}

/// What the insights of `user` must be: (entry count, words, active days, first day, last
/// day, current streak, longest streak, hour histogram) and the live days.
/// (entry count, words, active days, first day, last day, current streak, longest streak,
/// hour histogram).
pub(crate) type Totals = (
    i32,
    i64,
    i32,
    Option<NaiveDate>,
    Option<NaiveDate>,
    i32,
    i32,
    Vec<i32>,
);

#[derive(Debug, PartialEq)]
pub(crate) struct Expected {
    pub(crate) totals: Totals,
    pub(crate) days: BTreeMap<NaiveDate, (i32, i64)>,
}

/// Each entry ends as its newest version says; live entries count on their day.
pub(crate) fn oracle(events: &[Event], user: Uuid) -> Expected {
    let mut latest: BTreeMap<Uuid, &Event> = BTreeMap::new();
    for event in events.iter().filter(|event| event.user == user) {
        let newer = latest
            .get(&event.entry)
            .is_none_or(|stored| stored.version < event.version);
        if newer {
            latest.insert(event.entry, event);
        }
    }
    let mut days: BTreeMap<NaiveDate, (i32, i64)> = BTreeMap::new();
    let mut histogram = vec![0; 24];
    for event in latest.values() {
        if event.kind == Kind::Deleted {
            continue;
        }
        let day = days
            .entry(event.entry_date.unwrap_or(event.local_date))
            .or_default();
        day.0 += 1;
        day.1 += i64::from(event.words);
        histogram[event.hour as usize] += 1;
    }
    let (mut longest, mut run, mut previous) = (0, 0, None::<NaiveDate>);
    for day in days.keys() {
        run = if previous.and_then(|p| p.succ_opt()) == Some(*day) {
            run + 1
        } else {
            1
        };
        longest = longest.max(run);
        previous = Some(*day);
    }
    Expected {
        totals: (
            days.values().map(|(count, _)| count).sum(),
            days.values().map(|(_, words)| words).sum(),
            days.len() as i32,
            days.keys().next().copied(),
            days.keys().next_back().copied(),
            run,
            longest,
            histogram,
        ),
        days,
    }
}

/// A small deterministic generator (xorshift), so a failure replays.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// `entries` entries of `user`, each created then updated, deleted and restored a few times,
/// the entries' events interleaved (each entry's in version order, as the api emits them).
pub(crate) fn burst(rng: &mut Rng, user: Uuid, entries: usize, max_changes: u64) -> Vec<Event> {
    let first_day = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
    let day = |rng: &mut Rng| first_day + Days::days(rng.below(20) as i64);
    let mut per_entry: Vec<Vec<Event>> = Vec::new();
    for _ in 0..entries {
        let created = Utc::now();
        let mut event = Event {
            kind: Kind::Created,
            entry: Uuid::new_v4(),
            user,
            version: 1,
            words: rng.below(50) as i32,
            entry_date: (rng.below(2) == 0).then(|| day(rng)),
            local_date: day(rng),
            hour: rng.below(24) as i32,
            created,
        };
        let mut events = vec![event.clone()];
        for _ in 0..rng.below(max_changes + 1) {
            event.version += 1;
            event.kind = match event.kind {
                Kind::Deleted => Kind::Restored,
                _ if rng.below(3) == 0 => Kind::Deleted,
                _ => {
                    event.words = rng.below(50) as i32;
                    event.entry_date = (rng.below(2) == 0).then(|| day(rng));
                    Kind::Updated
                }
            };
            events.push(event.clone());
        }
        events.reverse();
        per_entry.push(events);
    }
    let mut interleaved = Vec::new();
    while !per_entry.is_empty() {
        let index = rng.below(per_entry.len() as u64) as usize;
        match per_entry[index].pop() {
            Some(event) => interleaved.push(event),
            None => {
                per_entry.swap_remove(index);
            }
        }
    }
    interleaved
}
