//! The transactional outbox: messages are rows in the service's own schema, written in the
//! same transaction as the state change that causes them. The relay publishes them and
//! deletes them in the transaction that claimed them (see [`crate::relay`]).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use messages::definition::BusMessage;
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, PgConnection};
use uuid::Uuid;

use crate::BusError;
use crate::headers;

/// The schema whose outbox messages this process emits into the WAL, once
/// [`emit_into_wal`] was called (the service skeleton does, with `BUS_OUTBOX=wal`).
static WAL_SCHEMA: OnceLock<String> = OnceLock::new();

/// From now on, every outbox write of this process goes into the WAL under `schema`'s prefix
/// ([`crate::wal_outbox`]) instead of the table. Call it once the schema's slot exists. Fails
/// when the process already emits for another schema (one service per process).
pub fn emit_into_wal(schema: &str) -> Result<(), BusError> {
    let chosen = WAL_SCHEMA.get_or_init(|| schema.to_owned());
    if chosen == schema {
        Ok(())
    } else {
        Err(BusError::Encode(format!(
            "this process already emits into the WAL for `{chosen}`, not `{schema}`"
        )))
    }
}

/// The schema this process emits into the WAL for, if it does.
pub fn wal_schema() -> Option<&'static str> {
    WAL_SCHEMA.get().map(String::as_str)
}

/// Write `message` to the outbox inside the caller's transaction. Returns the outbox id,
/// which becomes the message id (`Nats-Msg-Id`) consumers see.
pub async fn emit<M: BusMessage>(conn: &mut PgConnection, message: &M) -> Result<Uuid, BusError> {
    emit_raw(conn, &M::subject(), M::NAME, &message.encode_to_vec(), None).await
}

/// Like [`emit`], keeping order with every other message of the same `ordering_key` (e.g.
/// the aggregate id): the relay never publishes one before an earlier one with its key.
pub async fn emit_ordered<M: BusMessage>(
    conn: &mut PgConnection,
    message: &M,
    ordering_key: &str,
) -> Result<Uuid, BusError> {
    emit_raw(
        conn,
        &M::subject(),
        M::NAME,
        &message.encode_to_vec(),
        Some(ordering_key),
    )
    .await
}

/// Write a message to a subject relative to the namespace (`changes.user.<id>` for sync
/// changesets, or any typed message's subject).
pub async fn emit_raw(
    conn: &mut PgConnection,
    relative_subject: &str,
    name: &str,
    payload: &[u8],
    ordering_key: Option<&str>,
) -> Result<Uuid, BusError> {
    let mut batch = OutboxBatch::new();
    let outbox_id = batch.push_raw(relative_subject, name, payload.to_vec(), ordering_key);
    batch.write(conn).await?;
    Ok(outbox_id)
}

/// Several messages written to the outbox with one multi-row INSERT (one round trip), in the
/// order they were pushed: that is their `position` order, so messages sharing an ordering
/// key leave in push order.
///
/// ```ignore
/// let mut batch = OutboxBatch::new();
/// batch.push_ordered(&JournalEntryCreated { .. }, &entry_id);
/// batch.push_raw("changes.user.<id>", "changeset", payload, Some("changes.user.<id>"));
/// batch.write(&mut tx).await?;
/// ```
#[derive(Debug, Default)]
pub struct OutboxBatch {
    outbox_ids: Vec<Uuid>,
    subjects: Vec<String>,
    payloads: Vec<Vec<u8>>,
    names: Vec<String>,
    ordering_keys: Vec<Option<String>>,
}

impl OutboxBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a typed message (no ordering key). Returns its outbox id.
    pub fn push<M: BusMessage>(&mut self, message: &M) -> Uuid {
        self.push_raw(&M::subject(), M::NAME, message.encode_to_vec(), None)
    }

    /// Add a typed message kept in order with the other messages of `ordering_key`.
    pub fn push_ordered<M: BusMessage>(&mut self, message: &M, ordering_key: &str) -> Uuid {
        self.push_raw(
            &M::subject(),
            M::NAME,
            message.encode_to_vec(),
            Some(ordering_key),
        )
    }

    /// Add a message to a subject relative to the namespace (e.g. a sync changeset).
    pub fn push_raw(
        &mut self,
        relative_subject: &str,
        name: &str,
        payload: Vec<u8>,
        ordering_key: Option<&str>,
    ) -> Uuid {
        let outbox_id = Uuid::now_v7();
        self.outbox_ids.push(outbox_id);
        self.subjects.push(relative_subject.to_owned());
        self.payloads.push(payload);
        self.names.push(name.to_owned());
        self.ordering_keys.push(ordering_key.map(str::to_owned));
        outbox_id
    }

    pub fn len(&self) -> usize {
        self.outbox_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outbox_ids.is_empty()
    }

    /// Write every pushed message inside the caller's transaction, in one statement (into the
    /// WAL when the process emits there, see [`emit_into_wal`]). Returns the outbox ids in
    /// push order. An empty batch writes nothing.
    pub async fn write(self, conn: &mut PgConnection) -> Result<Vec<Uuid>, BusError> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(schema) = wal_schema() {
            return self.emit_to_wal(conn, schema).await;
        }
        let mut arguments = PgArguments::default();
        let outbox_ids = self.bind_arrays(&mut arguments)?;
        sqlx::query_with(&Self::insert_sql(1, None), arguments)
            .execute(conn)
            .await?;
        crate::relay::rows_written(outbox_ids.len());
        Ok(outbox_ids)
    }

    /// The `INSERT` that [`write`](Self::write) runs, reading the rows from the five array
    /// binds `$first_bind`..`$first_bind + 4` that [`add_binds`](Self::add_binds) appends.
    /// For a caller that writes the batch inside a bigger statement (a data-modifying CTE:
    /// the api's create writes its entry and its outbox rows in one statement): with
    /// `only_if` (an SQL condition, e.g. `EXISTS (SELECT 1 FROM entry)`) the rows are written
    /// only when it holds. The rows are the ones `write` writes, byte for byte.
    pub fn insert_sql(first_bind: usize, only_if: Option<&str>) -> String {
        let [ids, subjects, payloads, headers, keys] =
            std::array::from_fn(|offset| first_bind + offset);
        let condition = only_if
            .map(|condition| format!("WHERE {condition}"))
            .unwrap_or_default();
        // ORDER BY ordinality: `position` (a volatile nextval default, evaluated after the
        // sort) follows push order, which keeps one key's messages in order.
        format!(
            "INSERT INTO outbox (outbox_id, subject, payload, headers, ordering_key)
             SELECT outbox_id, subject, payload, headers::jsonb, ordering_key
               FROM UNNEST(${ids}::uuid[], ${subjects}::text[], ${payloads}::bytea[],
                           ${headers}::text[], ${keys}::text[])
                    WITH ORDINALITY AS m(outbox_id, subject, payload, headers, ordering_key, n)
              {condition}
              ORDER BY n"
        )
    }

    /// The batch's write as the body of a CTE in a bigger statement, where the process writes
    /// it (the table, or the WAL: [`emit_into_wal`]), reading the binds that
    /// [`add_cte_binds`](Self::add_cte_binds) appends from `$first_bind` on. The statement
    /// must read the CTE for it to run in both cases, e.g. `(SELECT count(*) FROM outbox_rows)`.
    pub fn cte_sql(first_bind: usize, only_if: Option<&str>) -> String {
        match wal_schema() {
            Some(_) => Self::wal_emit_sql(first_bind, only_if),
            None => format!(
                "{}\n             RETURNING 1",
                Self::insert_sql(first_bind, only_if)
            ),
        }
    }

    /// Append the binds [`cte_sql`](Self::cte_sql) reads. Returns the outbox ids in push order.
    pub fn add_cte_binds(self, arguments: &mut PgArguments) -> Result<Vec<Uuid>, BusError> {
        match wal_schema() {
            Some(schema) => self.add_wal_binds(schema, arguments),
            None => self.add_binds(arguments),
        }
    }

    /// Append the five arrays [`insert_sql`](Self::insert_sql) reads to `arguments` (after
    /// the caller's own binds). Returns the outbox ids in push order. Announces the rows to
    /// this process's relay, as [`write`](Self::write) does (see [`crate::relay`]); rows an
    /// `only_if` condition then leaves out are written off after the relay's re-checks.
    pub fn add_binds(self, arguments: &mut PgArguments) -> Result<Vec<Uuid>, BusError> {
        let outbox_ids = self.bind_arrays(arguments)?;
        crate::relay::rows_written(outbox_ids.len());
        Ok(outbox_ids)
    }

    /// Each message's headers: the caller's trace context (the same for every message) and
    /// the message's name.
    pub(crate) fn header_maps(&self) -> Vec<BTreeMap<String, String>> {
        let trace_headers: BTreeMap<String, String> = platform::telemetry::current_trace_headers()
            .into_iter()
            .collect();
        self.names
            .iter()
            .map(|name| {
                let mut header_map = trace_headers.clone();
                header_map.insert(headers::MESSAGE_NAME.to_owned(), name.clone());
                header_map
            })
            .collect()
    }

    /// The messages as the WAL outbox encodes them, in push order, with their outbox ids.
    pub(crate) fn into_wal_messages(self) -> (Vec<Uuid>, Vec<crate::wal_outbox::WalOutboxMessage>) {
        let header_maps = self.header_maps();
        let messages = self
            .outbox_ids
            .iter()
            .zip(self.subjects)
            .zip(self.payloads)
            .zip(header_maps)
            .map(
                |(((outbox_id, subject), payload), headers)| crate::wal_outbox::WalOutboxMessage {
                    outbox_id: outbox_id.as_bytes().to_vec(),
                    subject,
                    payload,
                    headers,
                },
            )
            .collect();
        (self.outbox_ids, messages)
    }

    fn bind_arrays(self, arguments: &mut PgArguments) -> Result<Vec<Uuid>, BusError> {
        let mut row_headers = Vec::with_capacity(self.names.len());
        for header_map in self.header_maps() {
            row_headers.push(
                serde_json::to_string(&header_map)
                    .map_err(|error| BusError::Encode(error.to_string()))?,
            );
        }
        let bind_error = |error: sqlx::error::BoxDynError| BusError::Encode(error.to_string());
        arguments.add(self.outbox_ids.clone()).map_err(bind_error)?;
        arguments.add(self.subjects).map_err(bind_error)?;
        arguments.add(self.payloads).map_err(bind_error)?;
        arguments.add(row_headers).map_err(bind_error)?;
        arguments.add(self.ordering_keys).map_err(bind_error)?;
        Ok(self.outbox_ids)
    }
}
