//! The transactional outbox: messages are rows in the service's own schema, written in the
//! same transaction as the state change that causes them. The relay publishes them.

use std::collections::BTreeMap;

use messages::definition::BusMessage;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::BusError;
use crate::headers;

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
    let outbox_id = Uuid::now_v7();
    let mut header_map: BTreeMap<String, String> = platform::telemetry::current_trace_headers()
        .into_iter()
        .collect();
    header_map.insert(headers::MESSAGE_NAME.to_owned(), name.to_owned());
    sqlx::query(
        "INSERT INTO outbox (outbox_id, subject, payload, headers, ordering_key) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(outbox_id)
    .bind(relative_subject)
    .bind(payload)
    .bind(Json(header_map))
    .bind(ordering_key)
    .execute(conn)
    .await?;
    Ok(outbox_id)
}
