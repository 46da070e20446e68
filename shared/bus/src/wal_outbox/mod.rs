//! The WAL-native outbox (issue 22; docs/bus.md, "The WAL outbox"): a producer emits its
//! messages into the write-ahead log with `pg_logical_emit_message(true, …)` inside the
//! transaction that causes them, and the relay reads them back from a logical replication
//! slot in commit order. No outbox row is inserted, claimed, deleted or vacuumed: a message
//! costs its WAL record and nothing else (1,155 B per create against the table outbox's
//! 2,294 B at `wal_level=logical`, docs/benchmarks.md).
//!
//! - One slot per service schema (`bus_outbox_<database>_<schema>`, `pgoutput`, over a
//!   publication with no tables), made by [`slot::ensure`] before anything is emitted: a message emitted while
//!   no slot exists is in no slot's future, so a producer emits into the WAL only once its
//!   slot exists ([`slot::exists`]), and into the table outbox otherwise.
//! - The relay ([`stream::run`]) reads the slot over the streaming replication protocol (one
//!   connection per slot: the lease), publishes the messages of its prefix in commit order
//!   with `Nats-Msg-Id` = the outbox id, waits for the acks under one deadline, and tells the
//!   server it is done up to the last transaction whose every message was acked. A lost
//!   connection resends from there; the stream's duplicate window drops what was published
//!   twice. [`relay::publish_pass`] does the same once through SQL, for tools and tests.
//! - Per-key order needs nothing: commit order is a total order that respects every key.
//! - The slot holds WAL until it advances: a stopped relay makes the WAL grow. Postgres's
//!   `max_slot_wal_keep_size` bounds it, and the relay reports the slot's lag
//!   (`bus_wal_outbox_lag_bytes`) for an alert.

pub mod decode;
pub mod emit;
pub mod relay;
pub mod slot;
pub mod stream;

use std::collections::BTreeMap;
use std::time::Duration;

/// A message as it travels in the WAL: what the table outbox keeps in a row's columns.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WalOutboxMessage {
    /// The outbox id, which becomes `Nats-Msg-Id` (16 bytes, a UUID).
    #[prost(bytes = "vec", tag = "1")]
    pub outbox_id: Vec<u8>,
    /// The subject relative to the namespace.
    #[prost(string, tag = "2")]
    pub subject: String,
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    /// The message's name and the writer's trace context.
    #[prost(btree_map = "string, string", tag = "4")]
    pub headers: BTreeMap<String, String>,
}

/// The WAL outbox of one service schema.
#[derive(Debug, Clone)]
pub struct WalOutboxConfig {
    /// The schema whose messages this relay publishes.
    pub schema: String,
    /// The replication slot it reads.
    pub slot: String,
    /// The (table-less) publication `pgoutput` is asked for.
    pub publication: String,
    /// The most changes one pass peeks (a peek still ends at a commit).
    pub batch_changes: i64,
    /// How long to wait for one pass's JetStream acks.
    pub ack_timeout: Duration,
}

impl WalOutboxConfig {
    pub fn new(schema: &str) -> Self {
        Self {
            schema: schema.to_owned(),
            slot: format!("bus_outbox_{schema}"),
            publication: "bus_outbox_messages".to_owned(),
            batch_changes: 1_000,
            ack_timeout: Duration::from_secs(5),
        }
    }

    /// The settings for `schema` in `database`: slot names are unique in the whole cluster
    /// while a slot belongs to one database, so the name carries both
    /// (`bus_outbox_<database>_<schema>`, in the characters a slot name allows, at most 63).
    pub fn for_database(schema: &str, database: &str) -> Self {
        let allowed = |text: &str| -> String {
            text.chars()
                .map(|character| match character.to_ascii_lowercase() {
                    lower @ ('a'..='z' | '0'..='9' | '_') => lower,
                    _ => '_',
                })
                .collect()
        };
        let schema = allowed(schema);
        let room = MAX_SLOT_NAME.saturating_sub("bus_outbox__".len() + schema.len());
        let database: String = allowed(database).chars().take(room).collect();
        Self {
            slot: format!("bus_outbox_{database}_{schema}"),
            ..Self::new(&schema)
        }
    }

    /// The prefix the schema's messages are emitted under.
    pub fn prefix(&self) -> String {
        prefix(&self.schema)
    }
}

/// Postgres's longest name (`NAMEDATALEN` − 1).
const MAX_SLOT_NAME: usize = 63;

/// The logical message prefix of `schema`'s outbox messages.
pub fn prefix(schema: &str) -> String {
    format!("bus.outbox.{schema}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_carry_the_database_in_the_characters_postgres_allows() {
        let config = WalOutboxConfig::for_database("api", "Journal-Prod");
        assert_eq!(config.slot, "bus_outbox_journal_prod_api");
        assert_eq!(config.schema, "api");
        let long = WalOutboxConfig::for_database("worker", &"d".repeat(100));
        assert_eq!(long.slot.len(), MAX_SLOT_NAME);
        assert!(long.slot.ends_with("_worker"), "{}", long.slot);
    }
}
