//! Emitting an [`OutboxBatch`] into the WAL instead of the outbox table.

use prost::Message;
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, PgConnection};
use uuid::Uuid;

use crate::BusError;
use crate::outbox::OutboxBatch;

impl OutboxBatch {
    /// Emit every pushed message into the WAL inside the caller's transaction, in one
    /// statement, under `schema`'s prefix: they reach the relay when (and only if) the
    /// transaction commits, in push order. Returns the outbox ids in push order.
    ///
    /// Only while `schema`'s slot exists ([`super::slot::exists`]): a message emitted with no
    /// slot to read it is never published.
    pub async fn emit_to_wal(
        self,
        conn: &mut PgConnection,
        schema: &str,
    ) -> Result<Vec<Uuid>, BusError> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let mut arguments = PgArguments::default();
        let outbox_ids = self.add_wal_binds(schema, &mut arguments)?;
        sqlx::query_with(&Self::wal_emit_sql(1, None), arguments)
            .execute(conn)
            .await?;
        Ok(outbox_ids)
    }

    /// The `SELECT` that [`emit_to_wal`](Self::emit_to_wal) runs, reading the prefix and the
    /// encoded messages from binds `$first_bind` and `$first_bind + 1` (appended by
    /// [`add_wal_binds`](Self::add_wal_binds)); with `only_if`, nothing is emitted unless the
    /// condition holds. Inside a bigger statement it goes in a CTE that the statement must
    /// read (a `SELECT` CTE nobody reads is not run), e.g. `(SELECT emitted FROM wal)`. It
    /// yields one row, `emitted`: how many messages it emitted.
    pub fn wal_emit_sql(first_bind: usize, only_if: Option<&str>) -> String {
        let prefix = first_bind;
        let contents = first_bind + 1;
        let condition = only_if
            .map(|condition| format!("WHERE {condition}"))
            .unwrap_or_default();
        // A function scan yields UNNEST's rows in order, and the aggregate calls the emit for
        // each as it comes: the messages enter the WAL in push order.
        format!(
            "SELECT count(pg_logical_emit_message(true, ${prefix}::text, m.content)) AS emitted
               FROM UNNEST(${contents}::bytea[]) WITH ORDINALITY AS m(content, n)
              {condition}"
        )
    }

    /// Append the two binds [`wal_emit_sql`](Self::wal_emit_sql) reads. Returns the outbox
    /// ids in push order. (No wake-up: the relay's stream brings each commit.)
    pub fn add_wal_binds(
        self,
        schema: &str,
        arguments: &mut PgArguments,
    ) -> Result<Vec<Uuid>, BusError> {
        let (outbox_ids, messages) = self.into_wal_messages();
        let contents: Vec<Vec<u8>> = messages.iter().map(Message::encode_to_vec).collect();
        let bind_error = |error: sqlx::error::BoxDynError| BusError::Encode(error.to_string());
        arguments.add(super::prefix(schema)).map_err(bind_error)?;
        arguments.add(contents).map_err(bind_error)?;
        Ok(outbox_ids)
    }
}
