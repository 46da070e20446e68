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

/// Team memberships: besides being synced, they move a client's scopes (a join or a leave
/// while streaming), so the sync-streamer looks for them by this name.
pub const TEAM_MEMBERS: &str = "team_members";

/// Every synced table.
pub const SYNCED_TABLES: [SyncedTable; 8] = [
    table("journal_entries", "api"),
    table("prompts", "api"),
    table("teams", "api"),
    table(TEAM_MEMBERS, "api"),
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
    writer_of(name).is_some()
}

/// The service whose outbox carries the changesets of the synced table `name` (`None`: not
/// synced). `tests/registry.rs` checks every [`crate::changes::SyncedRow`] in the services'
/// sources against it, so a row cannot be synced under a name the registry does not list,
/// or by a service the registry does not name.
pub fn writer_of(name: &str) -> Option<&'static str> {
    SYNCED_TABLES
        .iter()
        .find(|table| table.name == name)
        .map(|table| table.written_by)
}

/// The synced tables' names, comma-separated (for error messages).
pub fn names() -> String {
    SYNCED_TABLES
        .iter()
        .map(|table| table.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_table_has_a_writer() {
        for (index, table) in SYNCED_TABLES.iter().enumerate() {
            assert!(!table.written_by.is_empty(), "{} has no writer", table.name);
            assert_eq!(
                SYNCED_TABLES
                    .iter()
                    .position(|other| other.name == table.name),
                Some(index),
                "{} is listed twice",
                table.name
            );
        }
        assert_eq!(writer_of(TEAM_MEMBERS), Some("api"));
        assert_eq!(writer_of("entry_insights"), Some("worker"));
        assert_eq!(writer_of("sessions"), None);
        assert!(!is_synced("sessions"));
    }
}
