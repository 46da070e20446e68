//! Entry insights end to end: entries written through the api's RPC → `journal_entry.*`
//! events through the outbox and JetStream → the worker's insights rows and the changesets it
//! publishes for them (synced tables `entry_insights`, `entry_insight_days`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Duration as Days, NaiveDate, Timelike, Utc};
use common::{System, User, op, row_json};
use messages::journal::v1::{
    JournalEntryCreated, JournalEntryDeleted, JournalEntryFacts, JournalEntryUpdated,
};
use messages::sync::v1::ChangeOp;
use serde_json::{Value, json};
use test_support::{eventually, nats_url};
use uuid::Uuid;
use worker::insights::EntryInsights;

/// Asia/Tokyo is UTC+9 all year.
const TOKYO_OFFSET_HOURS: i64 = 9;

fn tokyo(created_at_ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(created_at_ms).unwrap() + Days::hours(TOKYO_OFFSET_HOURS)
}

fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

/// (longest run, run ending at the last day) of consecutive days.
fn streaks(days: &BTreeSet<NaiveDate>) -> (i64, i64) {
    let (mut longest, mut run, mut previous) = (0, 0, None::<NaiveDate>);
    for day in days {
        run = if previous.and_then(|p| p.succ_opt()) == Some(*day) {
            run + 1
        } else {
            1
        };
        longest = longest.max(run);
        previous = Some(*day);
    }
    (longest, run)
}

async fn create(system: &System, user: &User, input: Value) -> Value {
    system.ok(user, "journalEntries/create", input).await
}

/// The latest change of every row of `table` in the user's scope, by row id.
async fn latest_changes(
    system: &System,
    table: &str,
    user: &User,
) -> BTreeMap<String, (ChangeOp, i64, Value)> {
    let scope = format!("user.{}", user.user_id);
    let mut latest = BTreeMap::new();
    let mut versions: BTreeMap<String, i64> = BTreeMap::new();
    for (change_scope, change) in system.row_changes(table).await {
        if change_scope != scope {
            continue;
        }
        // Each row's changesets carry increasing versions (what the materializer relies on).
        let previous = versions.insert(change.row_id.clone(), change.version);
        assert!(
            previous.is_none_or(|previous| previous < change.version),
            "{table} {}: version {} after {previous:?}",
            change.row_id,
            change.version
        );
        latest.insert(
            change.row_id.clone(),
            (op(&change), change.version, row_json(&change)),
        );
    }
    latest
}

#[tokio::test]
async fn insights_follow_creates_updates_deletes_and_restores() {
    let system = System::start().await;
    let ada = system.login("ada@example.com").await;
    let bob = system.login("bob@example.com").await;
    system
        .ok(&ada, "users/update", json!({"timezone": "Asia/Tokyo"}))
        .await;
    let team = system
        .ok(&ada, "teams/create", json!({"name": "Writers"}))
        .await;
    let team_id = team["teamId"].as_str().unwrap().to_owned();
    system
        .ok(
            &ada,
            "teams/invite",
            json!({"teamId": team_id, "email": bob.email, "role": "member"}),
        )
        .await;
    let (_, invitations) = system
        .call(&bob, "teams/listInvitations", Value::Null)
        .await;
    let invitation = invitations[0]["teamInvitationId"].clone();
    system
        .ok(
            &bob,
            "teams/acceptInvitation",
            json!({"teamInvitationId": invitation}),
        )
        .await;

    let e1 = create(
        &system,
        &ada,
        json!({"title": "1", "content": "one two three", "entryDate": "2026-03-01"}),
    )
    .await;
    let e2 = create(
        &system,
        &ada,
        json!({"title": "2", "content": "a b c d e", "entryDate": "2026-03-02"}),
    )
    .await;
    let e3 = create(
        &system,
        &ada,
        json!({"title": "3", "content": "x y", "entryDate": "2026-03-03"}),
    )
    .await;
    let e4 = create(
        &system,
        &ada,
        json!({"title": "4", "content": "p q r s", "entryDate": "2026-03-05"}),
    )
    .await;
    let e5 = create(
        &system,
        &ada,
        json!({"title": "team", "content": "t1 t2", "entryDate": "2026-03-05", "teamId": team_id}),
    )
    .await;
    // Someone else's entry in the same team counts for them, not for Ada.
    create(&system, &bob, json!({"title": "bob", "content": "bob writes", "entryDate": "2026-03-04", "teamId": team_id})).await;
    // Undated: it counts for the day it was written in Ada's timezone.
    let e6 = create(
        &system,
        &ada,
        json!({"title": "6", "content": "  spaced\twords\n here ", }),
    )
    .await;
    let e6_day = tokyo(e6["createdAt"].as_i64().unwrap()).date_naive();

    system.wait_for_worker().await;
    let insights = sqlx::query_as::<_, (i32, i64, i32, i32, i32)>(
        "SELECT entry_count, word_count, active_days, current_streak_days, longest_streak_days
           FROM entry_insights WHERE user_id = $1",
    )
    .bind(ada.user_id)
    .fetch_one(&system.worker_pool)
    .await
    .unwrap();
    let days_so_far: BTreeSet<NaiveDate> = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-05"]
        .into_iter()
        .map(date)
        .chain([e6_day])
        .collect();
    let (longest, current) = streaks(&days_so_far);
    assert_eq!(
        insights,
        (
            6,
            3 + 5 + 2 + 4 + 2 + 3,
            days_so_far.len() as i32,
            current as i32,
            longest as i32
        ),
        "after the creates"
    );

    let id = |entry: &Value| entry["journalEntryId"].as_str().unwrap().to_owned();
    system
        .ok(
            &ada,
            "journalEntries/delete",
            json!({"journalEntryId": id(&e2)}),
        )
        .await;
    system
        .ok(
            &ada,
            "journalEntries/update",
            json!({"journalEntryId": id(&e3), "entryDate": "2026-03-02", "content": "x y z w"}),
        )
        .await;
    system
        .ok(
            &ada,
            "journalEntries/restore",
            json!({"journalEntryId": id(&e2)}),
        )
        .await;
    system
        .ok(
            &ada,
            "journalEntries/delete",
            json!({"journalEntryId": id(&e6)}),
        )
        .await;
    system.wait_for_worker().await;

    // Live now: e1 (03-01, 3 words), e2 (03-02, 5), e3 (03-02, 4), e4 and e5 (03-05, 4 + 2).
    let row: EntryInsights = sqlx::query_as(
        "SELECT user_id, entry_count, word_count, active_days, first_entry_day, last_entry_day,
                current_streak_days, longest_streak_days, hour_histogram, created_at,
                updated_at, version
           FROM entry_insights WHERE user_id = $1",
    )
    .bind(ada.user_id)
    .fetch_one(&system.worker_pool)
    .await
    .unwrap();
    let mut histogram = vec![0; 24];
    for entry in [&e1, &e2, &e3, &e4, &e5] {
        histogram[tokyo(entry["createdAt"].as_i64().unwrap()).hour() as usize] += 1;
    }
    assert_eq!(row.entry_count, 5, "entry count");
    assert_eq!(row.word_count, 3 + 5 + 4 + 4 + 2, "word count");
    assert_eq!(row.active_days, 3, "active days: 03-01, 03-02, 03-05");
    assert_eq!(
        (row.first_entry_day, row.last_entry_day),
        (Some(date("2026-03-01")), Some(date("2026-03-05")))
    );
    assert_eq!(
        (row.current_streak_days, row.longest_streak_days),
        (1, 2),
        "current streak ends at 03-05; longest 03-01..03-02"
    );
    assert_eq!(
        row.hour_histogram, histogram,
        "entries by hour written, in Tokyo time"
    );

    let days: Vec<(NaiveDate, i32, i64, bool)> = sqlx::query_as(
        "SELECT day, entry_count, word_count, deleted_at IS NOT NULL FROM entry_insight_days
          WHERE user_id = $1 ORDER BY day",
    )
    .bind(ada.user_id)
    .fetch_all(&system.worker_pool)
    .await
    .unwrap();
    let mut expected = vec![
        (date("2026-03-01"), 1, 3, false),
        (date("2026-03-02"), 2, 9, false),
        (date("2026-03-03"), 0, 0, true),
        (date("2026-03-05"), 2, 6, false),
        (e6_day, 0, 0, true),
    ];
    expected.sort();
    assert_eq!(
        days, expected,
        "entries per day; emptied days are tombstones"
    );

    // Bob's own entry, in his scope only.
    let bob_row: (i32, i64, Option<NaiveDate>) = sqlx::query_as(
        "SELECT entry_count, word_count, last_entry_day FROM entry_insights WHERE user_id = $1",
    )
    .bind(bob.user_id)
    .fetch_one(&system.worker_pool)
    .await
    .unwrap();
    assert_eq!(bob_row, (1, 2, Some(date("2026-03-04"))));

    // What clients receive: the latest changeset of every row equals the table.
    let published = latest_changes(&system, "entry_insights", &ada).await;
    let (change_op, version, json) = &published[&ada.user_id.to_string()];
    assert_eq!(*change_op, ChangeOp::Update);
    assert_eq!(*version, row.version);
    assert_eq!(json["userId"], ada.user_id.to_string());
    assert_eq!(json["entryCount"], 5);
    assert_eq!(json["wordCount"], 18);
    assert_eq!(json["activeDays"], 3);
    assert_eq!(json["firstEntryDay"], "2026-03-01");
    assert_eq!(json["lastEntryDay"], "2026-03-05");
    assert_eq!(json["currentStreakDays"], 1);
    assert_eq!(json["longestStreakDays"], 2);
    assert_eq!(json["hourHistogram"], json!(histogram));
    assert!(
        json["updatedAt"].is_i64(),
        "timestamps are epoch ms: {json}"
    );
    assert_eq!(json["version"], row.version);

    let published_days = latest_changes(&system, "entry_insight_days", &ada).await;
    assert_eq!(published_days.len(), expected.len());
    for (day, entry_count, word_count, deleted) in &expected {
        let (change_op, _, json) = &published_days[&format!("{}:{day}", ada.user_id)];
        assert_eq!(json["day"], day.to_string());
        assert_eq!(json["entryCount"], *entry_count);
        assert_eq!(json["wordCount"], *word_count);
        assert_eq!(json["deletedAt"].is_i64(), *deleted, "{json}");
        if *deleted {
            assert_eq!(*change_op, ChangeOp::Delete, "{day}: a tombstone");
        }
    }
    let bob_changes = latest_changes(&system, "entry_insights", &bob).await;
    assert_eq!(bob_changes.len(), 1, "Bob's row goes to Bob's scope only");

    system.stop().await;
}

fn facts(words: i32, day: &str, created: DateTime<Utc>) -> Option<JournalEntryFacts> {
    Some(JournalEntryFacts {
        word_count: words,
        entry_date: Some(day.to_owned()),
        created_local_date: created.date_naive().to_string(),
        created_local_hour: created.hour() as i32,
        created_at_ms: created.timestamp_millis(),
    })
}

/// Events redelivered, replayed or out of order never count twice or resurrect an entry; an
/// event whose facts make no sense is dead-lettered at once.
#[tokio::test]
async fn stale_and_replayed_events_change_nothing_and_bad_facts_are_dead_lettered() {
    let system = System::start().await;
    let client = platform::nats::connect(&nats_url(), "insights-test")
        .await
        .unwrap();
    let bus = bus::Bus::start(
        async_nats::jetstream::new(client),
        &system.namespace,
        "test",
    )
    .await
    .unwrap();
    let user_id = Uuid::new_v4();
    let entry_id = Uuid::new_v4();
    let created = Utc::now();
    let created_event = JournalEntryCreated {
        journal_entry_id: entry_id.to_string(),
        author_user_id: user_id.to_string(),
        team_id: String::new(),
        created_at_ms: created.timestamp_millis(),
        version: 1,
        facts: facts(10, "2026-04-01", created),
    };
    let handled = |count: i64| {
        let system = &system;
        async move {
            eventually(Duration::from_secs(20), || async {
                system.entry_events_handled().await == count
            })
            .await
        }
    };
    let totals = || {
        let pool = system.worker_pool.clone();
        async move {
            sqlx::query_as::<_, (i32, i64, i64)>(
                "SELECT entry_count, word_count, version FROM entry_insights WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };

    bus.publish(&created_event, "m-created").await.unwrap();
    assert!(handled(1).await);
    assert_eq!(totals().await, (1, 10, 1));

    // Deleted (v3) before the update it follows (v2) arrives.
    let deleted = JournalEntryDeleted {
        journal_entry_id: entry_id.to_string(),
        author_user_id: user_id.to_string(),
        version: 3,
        facts: facts(12, "2026-04-01", created),
        ..Default::default()
    };
    bus.publish(&deleted, "m-deleted").await.unwrap();
    assert!(handled(2).await);
    assert_eq!(totals().await, (0, 0, 2));
    let stale_update = JournalEntryUpdated {
        journal_entry_id: entry_id.to_string(),
        author_user_id: user_id.to_string(),
        version: 2,
        facts: facts(12, "2026-04-02", created),
        ..Default::default()
    };
    bus.publish(&stale_update, "m-updated").await.unwrap();
    // A replay of the creation under another message id (e.g. re-published by hand).
    bus.publish(&created_event, "m-created-again")
        .await
        .unwrap();
    assert!(handled(4).await);
    assert_eq!(totals().await, (0, 0, 2), "stale events change nothing");
    let stored: (i64, bool, Option<NaiveDate>) = sqlx::query_as(
        "SELECT version, deleted, entry_date FROM journal_entry_activity WHERE journal_entry_id = $1",
    )
    .bind(entry_id)
    .fetch_one(&system.worker_pool)
    .await
    .unwrap();
    assert_eq!(stored, (3, true, Some(date("2026-04-01"))));
    let changes = system.row_changes("entry_insights").await;
    assert_eq!(
        changes.len(),
        2,
        "one changeset per real change, none for stale events"
    );

    let bad = JournalEntryCreated {
        journal_entry_id: Uuid::new_v4().to_string(),
        author_user_id: user_id.to_string(),
        version: 1,
        facts: Some(JournalEntryFacts {
            created_local_hour: 25,
            ..facts(1, "2026-04-03", created).unwrap()
        }),
        ..Default::default()
    };
    bus.publish(&bad, "m-bad").await.unwrap();
    let dead = eventually(Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM dead_letters WHERE message_id = 'm-bad' AND attempts = 1
                AND last_error LIKE '%created_local_hour 25%'",
        )
        .fetch_one(&system.worker_pool)
        .await
        .unwrap()
            == 1
    })
    .await;
    assert!(dead, "an impossible hour is dead-lettered without retries");
    assert_eq!(totals().await, (0, 0, 2));
    system.stop().await;
}
