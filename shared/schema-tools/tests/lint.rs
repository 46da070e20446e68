//! `db lint`: the existing migrations pass; hand-edited migrations that break a rule fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use schema_tools::lint::{Finding, lint_files};

const BASE: &str = "CREATE TABLE notes (
    note_id uuid PRIMARY KEY,
    author text NOT NULL,
    legacy text
);
CREATE INDEX notes_author_idx ON notes (author);
";

fn lint(migration: &str) -> Vec<Finding> {
    lint_files(&[
        ("1_base.sql".to_owned(), BASE.to_owned()),
        ("2_change.sql".to_owned(), migration.to_owned()),
    ])
}

fn rules(migration: &str) -> Vec<String> {
    lint(migration)
        .into_iter()
        .map(|finding| finding.rule)
        .collect()
}

#[test]
fn the_existing_migrations_pass() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for schema in schema_tools::SCHEMAS {
        let findings =
            schema_tools::lint::lint_dirs(&schema_tools::migration_dirs(&root, schema)).unwrap();
        assert!(findings.is_empty(), "{schema}: {findings:#?}");
    }
}

/// The bus's migrations and a schema's own apply with one history: no version may be in both.
#[test]
fn the_bus_and_every_schema_use_distinct_versions() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let versions = |dir: PathBuf| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|name| name.split_once('_').map(|(version, _)| version.to_owned()))
            .collect()
    };
    let bus = versions(schema_tools::bus_migrations_dir(&root));
    assert!(!bus.is_empty());
    for schema in schema_tools::SCHEMAS {
        let own = versions(schema_tools::migrations_dir(&root, schema));
        let shared: Vec<&String> = own.iter().filter(|version| bus.contains(version)).collect();
        assert!(
            shared.is_empty(),
            "{schema}: {shared:?} also in shared/bus/migrations"
        );
    }
}

#[test]
fn safe_changes_pass() {
    let findings = lint_files(&[
        ("1_base.sql".to_owned(), BASE.to_owned()),
        (
            "2_change.sql".to_owned(),
            "SET lock_timeout = '5s';
ALTER TABLE notes ADD COLUMN mood smallint;
ALTER TABLE notes ADD COLUMN pinned boolean NOT NULL DEFAULT false;
ALTER TABLE notes ADD CONSTRAINT notes_mood_check CHECK (mood > 0) NOT VALID;
COMMENT ON COLUMN notes.legacy IS 'deprecated: unused';
"
            .to_owned(),
        ),
        (
            "3_validate.sql".to_owned(),
            "SET lock_timeout = '5s';\nALTER TABLE notes VALIDATE CONSTRAINT notes_mood_check;\n"
                .to_owned(),
        ),
    ]);
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn dropping_a_column_that_was_not_deprecated_fails() {
    let rules = rules("SET lock_timeout = '5s';\nALTER TABLE notes DROP COLUMN legacy;\n");
    assert!(rules.contains(&"drop-column".to_owned()), "{rules:?}");
    assert!(
        rules.contains(&"squawk:ban-drop-column".to_owned()),
        "{rules:?}"
    );
}

#[test]
fn dropping_a_column_deprecated_in_an_earlier_migration_passes() {
    let findings = lint_files(&[
        ("1_base.sql".to_owned(), BASE.to_owned()),
        (
            "2_deprecate.sql".to_owned(),
            "COMMENT ON COLUMN notes.legacy IS 'deprecated: unused';".to_owned(),
        ),
        (
            "3_drop.sql".to_owned(),
            "SET lock_timeout = '5s';\n-- squawk-ignore ban-drop-column\nALTER TABLE notes DROP COLUMN legacy;\n"
                .to_owned(),
        ),
    ]);
    assert!(findings.is_empty(), "{findings:#?}");
    // ...but not when the deprecation is in the same migration.
    let rules = rules(
        "COMMENT ON COLUMN notes.legacy IS 'deprecated: unused';\nSET lock_timeout = '5s';\n-- squawk-ignore ban-drop-column\nALTER TABLE notes DROP COLUMN legacy;\n",
    );
    assert_eq!(rules, ["drop-column"]);
}

#[test]
fn dropping_a_table_fails() {
    let rules = rules("SET lock_timeout = '5s';\nDROP TABLE notes;\n");
    assert!(rules.contains(&"drop-table".to_owned()), "{rules:?}");
}

#[test]
fn renaming_fails() {
    let rules = rules("SET lock_timeout = '5s';\nALTER TABLE notes RENAME COLUMN legacy TO old;\n");
    assert!(rules.contains(&"rename".to_owned()), "{rules:?}");
    assert!(
        rules.contains(&"squawk:renaming-column".to_owned()),
        "{rules:?}"
    );
}

#[test]
fn changing_a_type_fails() {
    let rules = rules(
        "SET lock_timeout = '5s';\nALTER TABLE notes ALTER COLUMN legacy TYPE varchar(10);\n",
    );
    assert!(rules.contains(&"alter-column-type".to_owned()), "{rules:?}");
}

#[test]
fn set_not_null_fails() {
    let rules =
        rules("SET lock_timeout = '5s';\nALTER TABLE notes ALTER COLUMN legacy SET NOT NULL;\n");
    assert!(rules.contains(&"set-not-null".to_owned()), "{rules:?}");
}

#[test]
fn a_required_column_without_default_fails() {
    let rules =
        rules("SET lock_timeout = '5s';\nALTER TABLE notes ADD COLUMN title text NOT NULL;\n");
    assert!(
        rules.contains(&"add-required-column".to_owned()),
        "{rules:?}"
    );
}

#[test]
fn a_plain_index_on_an_existing_table_fails() {
    let rules = rules("CREATE INDEX notes_legacy_idx ON notes (legacy);\n");
    assert!(
        rules.contains(&"index-concurrently".to_owned()),
        "{rules:?}"
    );
    assert!(
        rules.contains(&"squawk:require-concurrent-index-creation".to_owned()),
        "{rules:?}"
    );
}

#[test]
fn a_concurrent_index_needs_a_no_transaction_migration_of_its_own() {
    let rules_in_tx = rules("CREATE INDEX CONCURRENTLY notes_legacy_idx ON notes (legacy);\n");
    assert!(
        rules_in_tx.contains(&"concurrently-outside-transaction".to_owned()),
        "{rules_in_tx:?}"
    );
    let two = rules(
        "-- no-transaction\nCREATE INDEX CONCURRENTLY a_idx ON notes (legacy);\nCREATE INDEX CONCURRENTLY b_idx ON notes (author);\n",
    );
    assert!(
        two.contains(&"no-transaction-single-statement".to_owned()),
        "{two:?}"
    );
    let alone = lint(
        "-- no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS a_idx ON notes (legacy);\n",
    );
    assert!(alone.is_empty(), "{alone:#?}");
}

#[test]
fn a_validated_foreign_key_on_an_existing_table_fails() {
    let rules = rules(
        "SET lock_timeout = '5s';\nALTER TABLE notes ADD CONSTRAINT notes_author_check CHECK (author <> '');\n",
    );
    assert!(
        rules.contains(&"constraint-not-valid".to_owned()),
        "{rules:?}"
    );
    let rules = self::rules(
        "SET lock_timeout = '5s';\nALTER TABLE notes ADD COLUMN person_id uuid REFERENCES notes (note_id);\n",
    );
    assert!(
        rules.contains(&"constraint-not-valid".to_owned()),
        "{rules:?}"
    );
}

#[test]
fn not_valid_constraints_must_be_validated_in_a_later_migration() {
    let same = rules(
        "SET lock_timeout = '5s';
ALTER TABLE notes ADD CONSTRAINT c CHECK (author <> '') NOT VALID;
ALTER TABLE notes VALIDATE CONSTRAINT c;
",
    );
    assert!(same.contains(&"validate-separately".to_owned()), "{same:?}");
    let never = rules(
        "SET lock_timeout = '5s';\nALTER TABLE notes ADD CONSTRAINT c CHECK (author <> '') NOT VALID;\n",
    );
    assert_eq!(never, ["validate-not-valid"]);
}

#[test]
fn locking_an_existing_table_without_lock_timeout_fails() {
    let rules = rules("ALTER TABLE notes ADD COLUMN mood smallint;\n");
    assert_eq!(rules, ["lock-timeout"]);
}
