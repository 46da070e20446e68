//! The table registry: every table clients sync, by its wire name, and the service that
//! writes its changesets. The sync-streamer accepts these names in `tables=` filters; a
//! [`crate::changes::SyncedRow`] names one of them.

/// A table clients sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncedTable {
    /// The name in frames (`change.table`, `delta.table`) and filters.
    pub name: &'static str,
    /// The service whose outbox carries its changesets.
    pub written_by: &'static str,
}

/// Every synced table.
pub const SYNCED_TABLES: [SyncedTable; 8] = [
    table("journal_entries", "api"),
    table("prompts", "api"),
    table("teams", "api"),
    table("team_members", "api"),
    table("users", "api"),
    table("attachments", "api"),
    table("entry_insights", "worker"),
    table("entry_insight_days", "worker"),
];

const fn table(name: &'static str, written_by: &'static str) -> SyncedTable {
    SyncedTable { name, written_by }
}

/// Whether clients sync a table of this name.
pub fn is_synced(name: &str) -> bool {
    SYNCED_TABLES.iter().any(|table| table.name == name)
}

/// The synced tables' names, comma-separated (for error messages).
pub fn names() -> String {
    SYNCED_TABLES
        .iter()
        .map(|table| table.name)
        .collect::<Vec<_>>()
        .join(", ")
}
