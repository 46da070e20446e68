//! The replication slot a WAL relay reads: made once, peeked, advanced.

use sqlx::{PgPool, Postgres, Transaction};

use super::WalOutboxConfig;
use super::decode::{DecodeError, TransactionReader, WalTransaction, lsn_text};

/// The SQLSTATEs of an object that already exists because another replica made it at the
/// same moment: `duplicate_object` (a slot), and `unique_violation` (a publication whose
/// catalog row the other transaction inserted first).
const ALREADY_MADE: [&str; 2] = ["42710", "23505"];

/// Make the publication and the slot when they do not exist. Needs `wal_level=logical`
/// and a role with `REPLICATION` (or a superuser); errors say which is missing.
pub async fn ensure(pool: &PgPool, config: &WalOutboxConfig) -> Result<(), sqlx::Error> {
    let publication_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
            .bind(&config.publication)
            .fetch_one(pool)
            .await?;
    if !publication_exists {
        // A publication of no table: `pgoutput` wants one, and then sends only messages.
        let create = format!(
            "CREATE PUBLICATION {}",
            quote_identifier(&config.publication)
        );
        ignore_duplicate(sqlx::query(&create).execute(pool).await.map(drop))?;
    }
    if !exists(pool, config).await? {
        let created =
            sqlx::query("SELECT pg_create_logical_replication_slot($1::name, 'pgoutput')")
                .bind(&config.slot)
                .execute(pool)
                .await
                .map(drop);
        ignore_duplicate(created)?;
    }
    Ok(())
}

/// Whether the slot exists (in this database): only then may messages be emitted into the WAL.
pub async fn exists(pool: &PgPool, config: &WalOutboxConfig) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots
                         WHERE slot_name = $1::name AND database = current_database())",
    )
    .bind(&config.slot)
    .fetch_one(pool)
    .await
}

/// What one peek found.
#[derive(Debug, Default)]
pub struct Peeked {
    /// Whole transactions, in commit order (those without a message of the prefix too).
    pub transactions: Vec<WalTransaction>,
    /// Where the WAL was flushed before the peek: when the peek found nothing, every
    /// transaction committed before it is known to hold none of the prefix's messages.
    pub flushed_before: u64,
}

/// Why a peek failed.
#[derive(Debug, thiserror::Error)]
pub enum PeekError {
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("the slot returned a message that is not pgoutput's: {0}")]
    Decode(#[from] DecodeError),
}

/// Read (without consuming) up to about `config.batch_changes` changes from the slot, inside
/// the caller's transaction (which holds the slot's lock).
pub async fn peek(
    tx: &mut Transaction<'_, Postgres>,
    config: &WalOutboxConfig,
) -> Result<Peeked, PeekError> {
    let flushed_before: i64 =
        sqlx::query_scalar("SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint")
            .fetch_one(&mut **tx)
            .await?;
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT data FROM pg_logical_slot_peek_binary_changes(
                $1::name, NULL, $2::int,
                'proto_version', '1', 'publication_names', $3, 'messages', 'true')",
    )
    .bind(&config.slot)
    .bind(config.batch_changes)
    .bind(&config.publication)
    .fetch_all(&mut **tx)
    .await?;
    let prefix = config.prefix();
    let mut reader = TransactionReader::new(&prefix);
    for data in &rows {
        reader.push(data)?;
    }
    Ok(Peeked {
        transactions: reader.finish(),
        flushed_before: flushed_before.max(0) as u64,
    })
}

/// Move the slot to `lsn` (consuming what committed before it), unless it is there already.
pub async fn advance(
    tx: &mut Transaction<'_, Postgres>,
    config: &WalOutboxConfig,
    lsn: u64,
) -> Result<(), sqlx::Error> {
    // Postgres refuses to move a slot backwards; a pass that found nothing new asks for no move.
    sqlx::query(
        "SELECT pg_replication_slot_advance(slot_name, $2::pg_lsn)
           FROM pg_replication_slots
          WHERE slot_name = $1::name AND confirmed_flush_lsn < $2::pg_lsn",
    )
    .bind(&config.slot)
    .bind(lsn_text(lsn))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How many bytes of WAL the slot holds back: the current position minus what it confirmed.
pub async fn lag_bytes(
    pool: &PgPool,
    config: &WalOutboxConfig,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint
           FROM pg_replication_slots WHERE slot_name = $1::name",
    )
    .bind(&config.slot)
    .fetch_optional(pool)
    .await
}

fn ignore_duplicate(result: Result<(), sqlx::Error>) -> Result<(), sqlx::Error> {
    match result {
        Err(sqlx::Error::Database(error))
            if error
                .code()
                .is_some_and(|code| ALREADY_MADE.contains(&code.as_ref())) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
