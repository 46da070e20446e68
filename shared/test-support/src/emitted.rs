//! What a service emitted through its outbox, for tests that check it. The relay deletes the
//! rows it publishes, so a message is in the outbox, in its stream, or (while the relay's
//! transaction is open) both — never in neither. Reading the outbox first and the stream
//! second therefore sees every message, each once.

use std::collections::HashSet;

/// One emitted message.
#[derive(Debug, Clone)]
pub struct Emitted {
    /// The outbox id, which is also the `Nats-Msg-Id`.
    pub message_id: String,
    /// Relative to the bus namespace (`events.journal_entry.created`, `changes.user.<id>`).
    pub subject: String,
    /// The `Bus-Message` header (`journal_entry.created`, `changeset`).
    pub name: String,
    pub payload: Vec<u8>,
}

/// Every message `outbox` (a table name, schema-qualified or resolved by the pool's
/// search_path) emitted with a relative subject starting with `subject_prefix`, published ones
/// first in stream order, then unsent ones by position. `stream_base` is the stream the
/// subjects go to (`EVENTS`, `CHANGES`; a work-queue stream like `TASKS` loses consumed
/// messages, so it does not fit).
pub async fn emitted(
    pool: &sqlx::PgPool,
    outbox: &str,
    nats_url: &str,
    namespace: &str,
    stream_base: &str,
    subject_prefix: &str,
) -> anyhow::Result<Vec<Emitted>> {
    let unsent: Vec<(String, String, Option<String>, Vec<u8>)> = sqlx::query_as(&format!(
        "SELECT outbox_id::text, subject, headers->>'Bus-Message', payload FROM {outbox}
          WHERE sent_at IS NULL AND starts_with(subject, $1) ORDER BY position"
    ))
    .bind(subject_prefix)
    .fetch_all(pool)
    .await?;

    let client = async_nats::connect(nats_url).await?;
    let jetstream = async_nats::jetstream::new(client);
    let stream_name = if namespace.is_empty() {
        stream_base.to_owned()
    } else {
        format!(
            "{}_{stream_base}",
            namespace.to_ascii_uppercase().replace(['.', '-'], "_")
        )
    };
    let subject_root = if namespace.is_empty() {
        String::new()
    } else {
        format!("{namespace}.")
    };
    let stream = jetstream
        .get_stream(&stream_name)
        .await
        .map_err(|error| anyhow::anyhow!("stream {stream_name}: {error}"))?;
    let state = stream
        .get_info()
        .await
        .map_err(|error| anyhow::anyhow!("stream {stream_name}: {error}"))?
        .state;
    let mut published = Vec::new();
    if state.messages > 0 {
        for sequence in state.first_sequence..=state.last_sequence {
            // A gap (a deleted message) is not an error.
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue;
            };
            let Some(subject) = message.subject.as_str().strip_prefix(&subject_root) else {
                continue;
            };
            if !subject.starts_with(subject_prefix) {
                continue;
            }
            let header = |name: &str| {
                message
                    .headers
                    .get(name)
                    .map(|value| value.as_str().to_owned())
                    .unwrap_or_default()
            };
            published.push(Emitted {
                message_id: header("Nats-Msg-Id"),
                subject: subject.to_owned(),
                name: header("Bus-Message"),
                payload: message.payload.to_vec(),
            });
        }
    }
    let seen: HashSet<String> = published
        .iter()
        .map(|message| message.message_id.clone())
        .collect();
    published.extend(
        unsent
            .into_iter()
            .filter(|(message_id, ..)| !seen.contains(message_id))
            .map(|(message_id, subject, name, payload)| Emitted {
                message_id,
                subject,
                name: name.unwrap_or_default(),
                payload,
            }),
    );
    Ok(published)
}

/// The changesets the outbox of `pool` (its `outbox` table) emitted, oldest first (per scope,
/// in order).
pub async fn emitted_changesets(
    pool: &sqlx::PgPool,
    namespace: &str,
) -> anyhow::Result<Vec<messages::sync::v1::Changeset>> {
    use prost::Message;
    let emitted = emitted(
        pool,
        "outbox",
        &crate::nats_url(),
        namespace,
        "CHANGES",
        "changes.",
    )
    .await?;
    emitted
        .into_iter()
        .map(|message| {
            Ok(messages::sync::v1::Changeset::decode(
                message.payload.as_slice(),
            )?)
        })
        .collect()
}

/// One service's outbox (its `outbox` table, found by the pool's search_path) in a test's bus
/// namespace: what the service emitted, for the tests of every service that check it.
pub struct Outbox<'a> {
    pool: &'a sqlx::PgPool,
    namespace: &'a str,
}

impl<'a> Outbox<'a> {
    pub fn new(pool: &'a sqlx::PgPool, namespace: &'a str) -> Self {
        Self { pool, namespace }
    }

    /// The messages emitted to `stream_base` with a subject under `subject_prefix`: unsent
    /// rows and published messages (the relay deletes what it publishes), each once.
    pub async fn messages(&self, stream_base: &str, subject_prefix: &str) -> Vec<Emitted> {
        emitted(
            self.pool,
            "outbox",
            &crate::nats_url(),
            self.namespace,
            stream_base,
            subject_prefix,
        )
        .await
        .unwrap()
    }

    /// The changesets emitted, oldest first (per scope, in order). Published ones come from
    /// the namespace's CHANGES stream, which every service shares: callers filter by table.
    pub async fn changesets(&self) -> Vec<messages::sync::v1::Changeset> {
        emitted_changesets(self.pool, self.namespace).await.unwrap()
    }

    /// The changes of `table` in the emitted changesets, oldest first, as `(scope, change)`.
    pub async fn row_changes(&self, table: &str) -> Vec<(String, messages::sync::v1::RowChange)> {
        changes_of(self.changesets().await, table)
    }
}

/// The changes of `table` in `changesets`, in order, as `(scope, change)`.
pub fn changes_of(
    changesets: Vec<messages::sync::v1::Changeset>,
    table: &str,
) -> Vec<(String, messages::sync::v1::RowChange)> {
    changesets
        .into_iter()
        .flat_map(|changeset| {
            let scope = changeset.scope;
            changeset
                .changes
                .into_iter()
                .filter(|change| change.table == table)
                .map(move |change| (scope.clone(), change))
                .collect::<Vec<_>>()
        })
        .collect()
}
