//! The newtypes in SQL against a real Postgres: an id binds and reads as the `uuid` it
//! wraps (one, an array, NULL), an instant as its `timestamptz`.

use chrono::{DateTime, Utc};
use domain::ids::{JournalEntryId, TeamId, UserId};
use domain::time::EpochMillis;
use test_support::TestDb;
use uuid::Uuid;

#[tokio::test]
async fn ids_and_instants_bind_and_read_as_their_columns() -> Result<(), sqlx::Error> {
    let database = TestDb::new().await;
    let pool = database.pool().await;

    let user_id = UserId::generate();
    let (as_uuid, as_text): (Uuid, String) = sqlx::query_as("SELECT $1::uuid, $1::text")
        .bind(user_id)
        .fetch_one(&pool)
        .await?;
    assert_eq!(as_uuid, user_id.uuid());
    assert_eq!(as_text, user_id.to_string());

    let read: UserId = sqlx::query_scalar("SELECT $1::uuid")
        .bind(user_id.uuid())
        .fetch_one(&pool)
        .await?;
    assert_eq!(read, user_id);

    let entry_ids = vec![JournalEntryId::generate(), JournalEntryId::generate()];
    let read_back: Vec<JournalEntryId> = sqlx::query_scalar("SELECT unnest($1::uuid[])")
        .bind(&entry_ids)
        .fetch_all(&pool)
        .await?;
    assert_eq!(read_back, entry_ids);

    let no_team: Option<TeamId> = sqlx::query_scalar("SELECT $1::uuid")
        .bind(None::<TeamId>)
        .fetch_one(&pool)
        .await?;
    assert_eq!(no_team, None);

    let at = EpochMillis::from_millis(1_733_580_000_123).ok_or(sqlx::Error::RowNotFound)?;
    let (column, millis): (DateTime<Utc>, i64) = sqlx::query_as(
        "SELECT $1::timestamptz, (extract(epoch FROM $1::timestamptz) * 1000)::bigint",
    )
    .bind(at)
    .fetch_one(&pool)
    .await?;
    assert_eq!(column, at.at());
    assert_eq!(millis, at.millis());
    Ok(())
}
