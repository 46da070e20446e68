//! The write helper every synced write goes through (the job the original gave its ORM
//! hooks): a transaction that collects the row changes' changesets and the events they cause,
//! and writes them, in one outbox INSERT, when — and only when — it commits.
//!
//! ```ignore
//! let mut tx = SyncedTx::begin(&state.db).await?;
//! let team: Team = sqlx::query_as("UPDATE teams … RETURNING …").fetch_one(&mut *tx).await?;
//! tx.record(&[Scope::Team(team.team_id)], Op::Update, &team)?;
//! tx.emit_ordered(&TeamRenamed { .. }, &team.team_id.to_string());
//! tx.commit().await?;
//! ```
//!
//! The recording methods (`record`, `emit`, `emit_ordered`, `seal_changes`) are
//! [`SyncedRecorder`]'s, which [`SyncedWrites`] shares: import it with `SyncedTx`.
//!
//! [`SyncedTx::commit`] is the only way to commit: it writes what was recorded, then commits,
//! so a handler cannot commit its row without its changeset or its event. Dropped without a
//! commit (an early `return Err(..)`), it rolls back like any sqlx transaction and nothing
//! recorded is written. It derefs to the connection, so the row's own SQL runs on it as on a
//! `Transaction`.
//!
//! Order: the outbox rows are written in the order they were recorded — events in `emit`
//! order, each sync transaction's changesets where it was sealed
//! ([`SyncedRecorder::seal_changes`]; the changes recorded since are sealed at commit, after
//! the events). Only messages sharing an ordering key are ordered by the relay (an event's
//! key, or a changeset's scope), and within one key this is the order the former hand-written
//! emits had. Their `position` is taken when the batch is written, still inside the
//! transaction, so messages of one key from transactions serialized by a row lock keep the
//! lock's order.

use std::ops::{Deref, DerefMut};

use bus::outbox::OutboxBatch;
use messages::definition::BusMessage;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::changes::{Changes, Op, RowNotSerializable, Scope, SyncedRow};

/// What a synced write records: its events and its changesets, in recording order, as one
/// outbox batch. [`SyncedTx`] records into one and writes it at commit; a write that is one
/// statement (the api's journal entry create) builds its batch with it and binds the batch
/// into that statement.
#[derive(Debug, Default)]
pub struct SyncedWrites {
    /// Events and sealed changesets, in recording order.
    outbox: OutboxBatch,
    /// Row changes recorded since the last seal: one sync transaction.
    changes: Changes,
}

impl SyncedWrites {
    /// Everything recorded, the open sync transaction sealed last: the outbox rows to write
    /// with the change.
    pub fn into_outbox(mut self) -> OutboxBatch {
        self.seal_changes();
        self.outbox
    }
}

/// Recording a synced write: the row changes (their changesets) and the events they cause.
/// One API for [`SyncedTx`] (which writes what it recorded when it commits) and
/// [`SyncedWrites`] (a write that is one statement binds the batch itself).
pub trait SyncedRecorder {
    /// Where the records go.
    fn writes(&mut self) -> &mut SyncedWrites;

    /// Record `row` as changed for every scope in `scopes`.
    fn record<R: SyncedRow>(
        &mut self,
        scopes: &[Scope],
        op: Op,
        row: &R,
    ) -> Result<(), RowNotSerializable> {
        self.writes().changes.record(scopes, op, row)
    }

    /// Emit `message` (no ordering key). Returns its outbox id.
    fn emit<M: BusMessage>(&mut self, message: &M) -> Uuid {
        self.writes().outbox.push(message)
    }

    /// Emit `message`, kept in order with every other message of `ordering_key` (as
    /// [`bus::outbox::emit_ordered`]). Returns its outbox id.
    fn emit_ordered<M: BusMessage>(&mut self, message: &M, ordering_key: &str) -> Uuid {
        self.writes().outbox.push_ordered(message, ordering_key)
    }

    /// End the sync transaction recorded so far: its changesets (one per scope, sharing a
    /// transaction id) take their place in the outbox now, and later records start another.
    /// For a write that touches unrelated scopes (one sync transaction per user) or too many
    /// rows for one message.
    fn seal_changes(&mut self) {
        let writes = self.writes();
        std::mem::take(&mut writes.changes).push_to(&mut writes.outbox);
    }
}

impl SyncedRecorder for SyncedWrites {
    fn writes(&mut self) -> &mut SyncedWrites {
        self
    }
}

/// A transaction whose changesets and events are written with it (see the module docs).
#[must_use = "a SyncedTx writes nothing unless it is committed"]
pub struct SyncedTx<'c> {
    tx: Transaction<'c, Postgres>,
    writes: SyncedWrites,
}

impl std::fmt::Debug for SyncedTx<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SyncedTx")
            .field("writes", &self.writes)
            .finish_non_exhaustive()
    }
}

impl SyncedTx<'static> {
    /// Begin a transaction on `pool`.
    pub async fn begin(pool: &PgPool) -> Result<Self, sqlx::Error> {
        Ok(Self::new(pool.begin().await?))
    }
}

impl<'c> SyncedTx<'c> {
    /// Record into an open transaction (e.g. begun on a connection the caller holds).
    pub fn new(tx: Transaction<'c, Postgres>) -> Self {
        Self {
            tx,
            writes: SyncedWrites::default(),
        }
    }

    /// Write the recorded changesets and events (one INSERT), then commit.
    pub async fn commit(mut self) -> Result<(), bus::BusError> {
        self.write_recorded().await?;
        self.tx.commit().await?;
        Ok(())
    }

    /// Write what was recorded into the transaction, leaving it open (commit does this).
    async fn write_recorded(&mut self) -> Result<(), bus::BusError> {
        std::mem::take(&mut self.writes)
            .into_outbox()
            .write(&mut self.tx)
            .await?;
        Ok(())
    }
}

impl SyncedRecorder for SyncedTx<'_> {
    fn writes(&mut self) -> &mut SyncedWrites {
        &mut self.writes
    }
}

impl Deref for SyncedTx<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for SyncedTx<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use domain::ids::{TeamId, UserId};
    use messages::sync::v1::Changeset;
    use prost::Message;
    use serde::Serialize;
    use test_support::TestDb;

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Note {
        note_id: Uuid,
        version: i64,
    }

    impl SyncedRow for Note {
        const TABLE: &'static str = "notes";
        fn row_id(&self) -> String {
            self.note_id.to_string()
        }
        fn version(&self) -> i64 {
            self.version
        }
    }

    /// A database with the bus's tables (their declared state) and a table of notes.
    async fn database() -> (TestDb, PgPool) {
        let db = TestDb::new().await;
        let pool = db.pool().await;
        sqlx::raw_sql(include_str!("../../bus/schema.sql"))
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE notes (note_id uuid PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        (db, pool)
    }

    #[derive(Debug, sqlx::FromRow)]
    struct OutboxRow {
        outbox_id: Uuid,
        subject: String,
        payload: Vec<u8>,
        ordering_key: Option<String>,
        name: Option<String>,
    }

    async fn outbox(pool: &PgPool) -> Vec<OutboxRow> {
        sqlx::query_as(
            "SELECT outbox_id, subject, payload, ordering_key, headers->>'Bus-Message' AS name
               FROM outbox ORDER BY position",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    }

    fn a_note() -> Note {
        Note {
            note_id: Uuid::now_v7(),
            version: 1,
        }
    }

    async fn insert(tx: &mut SyncedTx<'_>, note: &Note) {
        sqlx::query("INSERT INTO notes VALUES ($1)")
            .bind(note.note_id)
            .execute(&mut **tx)
            .await
            .unwrap();
    }

    fn an_event(user_id: UserId) -> messages::journal::v1::UserPurged {
        messages::journal::v1::UserPurged {
            user_id: user_id.to_string(),
            purged_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn commit_writes_the_row_its_changesets_and_its_events_in_recording_order() {
        let (_db, pool) = database().await;
        let user_id = UserId::generate();
        let note = a_note();
        let team_id = TeamId::generate();
        let mut tx = SyncedTx::begin(&pool).await.unwrap();
        insert(&mut tx, &note).await;
        tx.record(
            &[Scope::User(user_id), Scope::Team(team_id)],
            Op::Insert,
            &note,
        )
        .unwrap();
        let event_id = tx.emit_ordered(&an_event(user_id), "key-1");
        tx.emit(&an_event(user_id));
        tx.commit().await.unwrap();

        let notes: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(notes, 1);
        let rows = outbox(&pool).await;
        assert_eq!(rows.len(), 4, "{rows:?}");
        // The events first (emitted before the changes were sealed at commit), in order.
        assert_eq!(rows[0].outbox_id, event_id);
        assert_eq!(rows[0].ordering_key.as_deref(), Some("key-1"));
        assert_eq!(rows[1].ordering_key, None);
        for row in &rows[..2] {
            assert_eq!(
                row.subject,
                <messages::journal::v1::UserPurged as BusMessage>::subject()
            );
        }
        // Then one changeset per scope, parts of one sync transaction, keyed by subject.
        let parts: Vec<Changeset> = rows[2..]
            .iter()
            .map(|row| {
                assert_eq!(row.ordering_key.as_deref(), Some(row.subject.as_str()));
                assert_eq!(row.name.as_deref(), Some("changeset"));
                Changeset::decode(row.payload.as_slice()).unwrap()
            })
            .collect();
        let mut scopes: Vec<String> = parts.iter().map(|part| part.scope.clone()).collect();
        scopes.sort();
        let mut expected = vec![Scope::User(user_id).key(), Scope::Team(team_id).key()];
        expected.sort();
        assert_eq!(scopes, expected);
        for (row, part) in rows[2..].iter().zip(&parts) {
            assert_eq!(row.subject, format!("changes.{}", part.scope));
            assert_eq!(part.transaction_id, parts[0].transaction_id);
            assert_eq!(part.part_count, 2);
            assert_eq!(part.changes.len(), 1);
            assert_eq!(part.changes[0].row_id, note.note_id.to_string());
            assert_eq!(part.changes[0].table, "notes");
        }
    }

    #[tokio::test]
    async fn dropped_without_commit_nothing_is_written() {
        let (_db, pool) = database().await;
        let user_id = UserId::generate();
        let note = a_note();
        {
            let mut tx = SyncedTx::begin(&pool).await.unwrap();
            insert(&mut tx, &note).await;
            tx.record(&[Scope::User(user_id)], Op::Insert, &note)
                .unwrap();
            tx.emit(&an_event(user_id));
            tx.seal_changes();
            // Even what was written into the open transaction goes with it.
            tx.write_recorded().await.unwrap();
        }
        let notes: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(notes, 0);
        assert!(outbox(&pool).await.is_empty());
    }

    #[tokio::test]
    async fn sealed_changes_are_sync_transactions_of_their_own() {
        let (_db, pool) = database().await;
        let (first_user, second_user) = (UserId::generate(), UserId::generate());
        let mut tx = SyncedTx::begin(&pool).await.unwrap();
        for user_id in [first_user, second_user] {
            tx.record(&[Scope::User(user_id)], Op::Update, &a_note())
                .unwrap();
            tx.seal_changes();
        }
        // Sealing nothing adds nothing.
        tx.seal_changes();
        tx.commit().await.unwrap();
        let parts: Vec<Changeset> = outbox(&pool)
            .await
            .iter()
            .map(|row| Changeset::decode(row.payload.as_slice()).unwrap())
            .collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].scope, Scope::User(first_user).key());
        assert_eq!(parts[1].scope, Scope::User(second_user).key());
        assert_ne!(parts[0].transaction_id, parts[1].transaction_id);
        for part in &parts {
            assert_eq!(part.part_count, 1);
            assert_eq!(part.transaction_scopes, std::slice::from_ref(&part.scope));
        }
    }

    #[tokio::test]
    async fn a_transaction_that_records_nothing_writes_nothing_to_the_outbox() {
        let (_db, pool) = database().await;
        let mut tx = SyncedTx::new(pool.begin().await.unwrap());
        insert(&mut tx, &a_note()).await;
        tx.commit().await.unwrap();
        assert!(outbox(&pool).await.is_empty());
    }
}
