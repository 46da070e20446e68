//! The bus's own tables (outbox, dead letters, processed messages, relay state) live in every
//! service's schema. Their migrations are declared once, in `shared/bus/migrations/`, and
//! applied by each schema's migrator together with the service's own folder
//! ([`with_bus_tables`]); their declared end state is `shared/bus/schema.sql`.
//!
//! Applied history keeps its place: sqlx checks every applied migration's version and checksum,
//! so only files that were byte-identical in all five schemas under one version moved here
//! (`20261124080000_bus.sql`). The later bus migrations already applied under a different
//! version or text per schema (`relay_busy_state`, `lean_outbox`) stay in
//! `migrations/<schema>/`.

use sqlx::migrate::Migrator;

/// The bus's migrations, embedded like each service's own.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// `service`'s migrations with the bus's, in version order: the migrator a service applies to
/// its schema at start.
pub fn with_bus_tables(service: Migrator) -> Migrator {
    platform::db::combined_migrations(&[&MIGRATIONS, &service])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every schema already applied these under their version and checksum (sqlx refuses to
    /// start against a history whose applied migration changed): a bus migration, once
    /// released, is never edited or renumbered.
    #[test]
    fn released_bus_migrations_keep_their_version_and_checksum() {
        const RELEASED: [(i64, &str); 1] = [(
            20261124080000,
            "b55324d6f4f792e590b8cd9451541ce37667eeedb52fd6b1892b1ef0751f78b1a082f8a39f1bc07d27805f198118f89d",
        )];
        let embedded: Vec<(i64, String)> = MIGRATIONS
            .iter()
            .map(|migration| {
                let checksum: String = migration
                    .checksum
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect();
                (migration.version, checksum)
            })
            .collect();
        for (version, checksum) in RELEASED {
            assert!(
                embedded.contains(&(version, checksum.to_owned())),
                "{version} changed or went missing: {embedded:?}"
            );
        }
    }

    #[test]
    fn a_service_migrator_applies_the_bus_tables_first() {
        let combined = with_bus_tables(Migrator {
            migrations: std::borrow::Cow::Owned(Vec::new()),
            ignore_missing: false,
            locking: true,
            no_tx: false,
        });
        let versions: Vec<i64> = combined.iter().map(|migration| migration.version).collect();
        assert_eq!(versions, vec![20261124080000, 20261207230000]);
    }
}
