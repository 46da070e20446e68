//! At-least-once delivery means a handler can see a message twice. A handler whose effect
//! must not repeat records the message id in the same transaction as the effect.

use sqlx::PgConnection;

/// Record that `handler` processed `message_id`. Returns false when it already had — the
/// caller then skips the effect (and commits nothing new).
pub async fn first_time(
    conn: &mut PgConnection,
    handler: &str,
    message_id: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO processed_messages (handler, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(handler)
    .bind(message_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// [`first_time`] for a batch, in one statement: records every id of `message_ids` not
/// recorded yet for `handler` and returns those (the messages whose effect is still to do).
/// For batch handlers whose effect is not idempotent by itself.
pub async fn first_times(
    conn: &mut PgConnection,
    handler: &str,
    message_ids: &[String],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO processed_messages (handler, message_id)
         SELECT $1, id FROM unnest($2::text[]) AS ids(id)
         ON CONFLICT DO NOTHING
         RETURNING message_id",
    )
    .bind(handler)
    .bind(message_ids)
    .fetch_all(conn)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// Whether `handler` has recorded `message_id` already: a cheap look before expensive work
/// that [`first_time`] then records in the effect's transaction.
pub async fn already_processed(
    db: &sqlx::PgPool,
    handler: &str,
    message_id: &str,
) -> Result<bool, sqlx::Error> {
    let done: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM processed_messages WHERE handler = $1 AND message_id = $2",
    )
    .bind(handler)
    .bind(message_id)
    .fetch_optional(db)
    .await?;
    Ok(done.is_some())
}
