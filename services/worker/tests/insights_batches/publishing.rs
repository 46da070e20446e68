//! How changed insights reach clients: the handlers mark what they changed, and the publisher
//! sends each user's marked rows as one changeset per window (`INSIGHTS_SYNC_DELAY_MS`).

use std::time::{Duration, Instant};

use test_support::eventually;
use uuid::Uuid;
use worker::insights::InsightPublisher;

use crate::events::{Rng, burst, oracle};
use crate::harness::Harness;

async fn unpublished(harness: &Harness) -> Vec<(Uuid, chrono::NaiveDate)> {
    sqlx::query_as("SELECT user_id, day FROM insight_sync_due ORDER BY user_id, day")
        .fetch_all(&harness.pool)
        .await
        .unwrap()
}

async fn stored_version(harness: &Harness, user: Uuid) -> i64 {
    sqlx::query_scalar("SELECT version FROM entry_insights WHERE user_id = $1")
        .bind(user)
        .fetch_one(&harness.pool)
        .await
        .unwrap()
}

/// Three batches of one user's creates within one window change the stored insights three
/// times or more, but clients get one changeset: the rows as the last batch left them.
#[tokio::test]
async fn a_users_changes_within_the_window_are_one_changeset() {
    const WINDOW: Duration = Duration::from_secs(5);
    let mut harness = Harness::new().await;
    let mut rng = Rng(0x00c0_a1e5);
    let ada = Uuid::new_v4();
    let events = burst(&mut rng, ada, 30, 0);
    let worker = harness
        .start_worker_with(|config| config.insights_sync_delay = WINDOW)
        .await;
    let first_published = Instant::now();
    for step in events.chunks(10) {
        harness.publish_all(step).await;
        harness.caught_up().await;
    }
    let handled_after = first_published.elapsed();
    // The window opened at the first batch's commit, after `first_published`.
    if handled_after < WINDOW {
        assert!(
            !unpublished(&harness).await.is_empty(),
            "the changed days are marked until the window ends"
        );
        assert!(
            harness.changesets(ada).await.is_empty(),
            "nothing is published before the window ends"
        );
    } else {
        eprintln!("handling took {handled_after:?}, longer than the window: not checked early");
    }
    let published = eventually(WINDOW * 3, || async {
        unpublished(&harness).await.is_empty()
    })
    .await;
    assert!(published, "the marks were published");
    harness.stop_worker(worker).await;

    let version = stored_version(&harness, ada).await;
    assert!(
        version >= 3,
        "one version per batch at least, got {version}"
    );
    let changesets = harness.changesets(ada).await;
    assert_eq!(changesets.len(), 1, "one changeset for the window");
    let totals: Vec<_> = changesets[0]
        .changes
        .iter()
        .filter(|change| change.table == "entry_insights")
        .collect();
    assert_eq!(totals.len(), 1);
    assert_eq!(totals[0].version, version, "the totals as they are now");
    harness.assert_insights(ada, &oracle(&events, ada)).await;
    harness.cleanup().await;
}

/// The publisher skips a user whose insights a handler holds (that handler wakes it again),
/// publishes the user's marks once free, and drops the marks of a user whose rows are gone.
#[tokio::test]
async fn marks_wait_for_a_held_user_and_go_with_a_purged_one() {
    let harness = Harness::new().await;
    let ada = Uuid::new_v4();
    let purged = Uuid::new_v4();
    // Ada's rows as a handler leaves them: the totals at their second version, a new day,
    // and the day's mark. The purged user has a mark and no rows.
    sqlx::query(
        "INSERT INTO entry_insights (user_id, entry_count, word_count, active_days, version)
         VALUES ($1, 1, 5, 1, 2)",
    )
    .bind(ada)
    .execute(&harness.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO entry_insight_days (user_id, day, entry_count, word_count)
         VALUES ($1, '2026-03-01', 1, 5)",
    )
    .bind(ada)
    .execute(&harness.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO insight_sync_due (user_id, day)
         VALUES ($1, '2026-03-01'), ($2, '2026-03-02')",
    )
    .bind(ada)
    .bind(purged)
    .execute(&harness.pool)
    .await
    .unwrap();
    let publisher = InsightPublisher::new(harness.pool.clone(), Duration::ZERO);

    let mut handler = harness.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM entry_insights WHERE user_id = $1 FOR UPDATE")
        .bind(ada)
        .execute(&mut *handler)
        .await
        .unwrap();
    assert!(!publisher.publish_due().await.unwrap(), "not a full batch");
    assert_eq!(
        unpublished(&harness).await,
        [(ada, "2026-03-01".parse().unwrap())],
        "the held user's mark stays; the purged user's is gone"
    );
    assert!(harness.changesets(ada).await.is_empty());
    assert!(harness.changesets(purged).await.is_empty());
    handler.rollback().await.unwrap();

    assert!(!publisher.publish_due().await.unwrap());
    assert!(unpublished(&harness).await.is_empty());
    let changesets = harness.changesets(ada).await;
    assert_eq!(changesets.len(), 1);
    let mut published: Vec<(&str, i64)> = changesets[0]
        .changes
        .iter()
        .map(|change| (change.table.as_str(), change.version))
        .collect();
    published.sort();
    assert_eq!(
        published,
        [("entry_insight_days", 1), ("entry_insights", 2)],
        "the marked day and the totals"
    );
    // Nothing marked: nothing to publish.
    assert!(!publisher.publish_due().await.unwrap());
    assert_eq!(harness.changesets(ada).await.len(), 1);
    harness.cleanup().await;
}

/// More users due than one publish takes (500 per transaction): the publisher goes on at once
/// until every mark is published, one changeset per user, none twice.
#[tokio::test]
async fn more_users_due_than_one_publish_takes_are_all_published() {
    const USERS: usize = 1_201;
    let harness = Harness::new().await;
    let users: Vec<Uuid> = (0..USERS).map(|_| Uuid::new_v4()).collect();
    for statement in [
        "INSERT INTO entry_insights (user_id, entry_count, word_count, active_days, version)
         SELECT user_id, 1, 5, 1, 1 FROM unnest($1::uuid[]) AS due (user_id)",
        "INSERT INTO entry_insight_days (user_id, day, entry_count, word_count)
         SELECT user_id, '2026-03-01', 1, 5 FROM unnest($1::uuid[]) AS due (user_id)",
        "INSERT INTO insight_sync_due (user_id, day)
         SELECT user_id, '2026-03-01' FROM unnest($1::uuid[]) AS due (user_id)",
    ] {
        sqlx::query(statement)
            .bind(&users)
            .execute(&harness.pool)
            .await
            .unwrap();
    }
    let publisher = InsightPublisher::new(harness.pool.clone(), Duration::ZERO);

    let mut publishes = 1;
    while publisher.publish_due().await.unwrap() {
        publishes += 1;
        assert!(publishes <= 10, "the publisher does not stop");
    }
    assert_eq!(
        publishes, 3,
        "500, 500, then 201 users: the last is not a full batch"
    );
    assert!(
        unpublished(&harness).await.is_empty(),
        "every mark published"
    );
    let mut published: Vec<String> = harness
        .emitted_changes("changes.user.")
        .await
        .into_iter()
        .map(|message| message.subject)
        .collect();
    published.sort();
    let mut expected: Vec<String> = users
        .iter()
        .map(|user| format!("changes.user.{user}"))
        .collect();
    expected.sort();
    assert_eq!(published, expected, "one changeset per user, none twice");
    harness.cleanup().await;
}
