//! The daily purge of old history and sent outbox rows.

use std::time::Duration;

use messages::journal::v1::RetentionPurgeDue;
use test_support::eventually;
use uuid::Uuid;

use crate::fixtures::Fixture;

#[tokio::test]
async fn the_daily_purge_removes_old_history_and_sent_outbox_rows() {
    let fixture = Fixture::start(|config| {
        config.history_retention = Duration::from_secs(30 * 86_400);
    })
    .await;
    for (key, age_days) in [("old", 40), ("recent", 1)] {
        sqlx::query(
            "INSERT INTO notifications (idempotency_key, message_id, kind, workflow, distinct_id,
                                        status, attempts, created_at)
             VALUES ($1, $1, 'workflow', 'daily-prompt', 'u', 'delivered', 1,
                     now() - make_interval(days => $2))",
        )
        .bind(key)
        .bind(age_days)
        .execute(&fixture.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO delivery_attempts (delivery_attempt_id, idempotency_key, attempt, outcome,
                                            http_status, latency_ms)
             VALUES (gen_random_uuid(), $1, 1, 'accepted', 202, 5)",
        )
        .bind(key)
        .execute(&fixture.pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO outbox (outbox_id, subject, payload, sent_at)
         VALUES (gen_random_uuid(), 'events.old', '', now() - interval '2 days')",
    )
    .execute(&fixture.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO processed_messages (handler, message_id, processed_at)
         VALUES ('h', 'old', now() - interval '40 days'), ('h', 'recent', now())",
    )
    .execute(&fixture.pool)
    .await
    .unwrap();
    fixture
        .bus
        .publish(
            &RetentionPurgeDue {
                cron_run_id: Uuid::now_v7().to_string(),
                scheduled_for_ms: chrono::Utc::now().timestamp_millis(),
            },
            &Uuid::now_v7().to_string(),
        )
        .await
        .unwrap();
    let count = |sql: &'static str| {
        let pool = fixture.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    // Notifications go last in the handler: once they are purged, everything is.
    let purged = eventually(Duration::from_secs(20), || async {
        count("SELECT count(*) FROM notifications").await == 1
    })
    .await;
    assert!(purged);
    assert_eq!(
        count("SELECT count(*) FROM outbox WHERE subject = 'events.old'").await,
        0
    );
    let keys: Vec<String> = sqlx::query_scalar("SELECT idempotency_key FROM notifications")
        .fetch_all(&fixture.pool)
        .await
        .unwrap();
    assert_eq!(keys, ["recent"]);
    assert_eq!(count("SELECT count(*) FROM delivery_attempts").await, 1);
    let processed: Vec<String> =
        sqlx::query_scalar("SELECT message_id FROM processed_messages WHERE handler = 'h'")
            .fetch_all(&fixture.pool)
            .await
            .unwrap();
    assert_eq!(processed, ["recent"]);
    fixture.stop().await;
}
