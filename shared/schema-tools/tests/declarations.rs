//! The declared schemas (`shared/bus/schema.sql` + `services/*/schema.sql`) match what their
//! migrations (`shared/bus/migrations` + `migrations/*/`) produce, and drift is detected.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use schema_tools::{Change, SCHEMAS};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

#[tokio::test]
async fn every_declaration_matches_its_migrations() {
    let server = test_support::admin_database_url();
    let root = repo_root();
    for schema in SCHEMAS {
        let declaration = schema_tools::declaration(&root, schema).unwrap();
        let changes = schema_tools::check(
            &server,
            schema,
            &schema_tools::migration_dirs(&root, schema),
            &declaration,
        )
        .await
        .unwrap();
        let listed: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert!(
            listed.is_empty(),
            "{schema} drifted:\n{}",
            listed.join("\n")
        );
    }
}

#[tokio::test]
async fn the_model_sees_tables_columns_indexes_constraints_functions_and_triggers() {
    let server = test_support::admin_database_url();
    let root = repo_root();
    let model =
        schema_tools::migrated_schema(&server, "api", &schema_tools::migration_dirs(&root, "api"))
            .await
            .unwrap();
    // Every table the declaration creates (the drift test above checks the rest of it).
    let declaration = schema_tools::declaration(&root, "api").unwrap();
    let mut declared: Vec<&str> = declaration
        .lines()
        .filter_map(|line| line.strip_prefix("CREATE TABLE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    declared.sort_unstable();
    let tables: Vec<&str> = model.tables.keys().map(String::as_str).collect();
    assert!(declared.len() > 10, "{declared:?}");
    assert_eq!(tables, declared);
    let outbox = &model.tables["outbox"];
    let position = outbox.column("\"position\"").unwrap();
    assert_eq!(position.serial.as_deref(), Some("bigserial"));
    assert!(outbox.indexes.contains_key("outbox_unsent_idx"));
    // The outbox's NOTIFY trigger was dropped by a later migration (the relay is woken in
    // process); its function stays a release: the model reads the end state, not the history.
    assert!(outbox.triggers.is_empty(), "{:?}", outbox.triggers.keys());
    assert!(model.functions.contains_key("outbox_notify()"));
    // No declared schema has a trigger now; one added to a declaration is seen with its
    // function.
    let with_trigger = format!(
        "{declaration}
CREATE FUNCTION outbox_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER outbox_touch AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_touch();
"
    );
    let declared = schema_tools::declared_schema(&server, "api", &with_trigger)
        .await
        .unwrap();
    assert_eq!(
        declared.tables["outbox"].triggers["outbox_touch"].definition,
        "CREATE TRIGGER outbox_touch AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_touch()"
    );
    assert!(declared.functions.contains_key("outbox_touch()"));
    let sessions = &model.tables["sessions"];
    assert_eq!(
        sessions.constraints["sessions_user_id_fkey"].definition,
        "FOREIGN KEY (user_id) REFERENCES users(user_id)"
    );
    let dead_letters = &model.tables["dead_letters"];
    assert!(
        dead_letters
            .column("dead_letter_id")
            .unwrap()
            .volatile_default
    );
    assert!(!dead_letters.column("dead_at").unwrap().volatile_default);
}

#[tokio::test]
async fn drift_is_detected() {
    let server = test_support::admin_database_url();
    let root = repo_root();
    let declaration = schema_tools::declaration(&root, "worker")
        .unwrap()
        .replace(
            "    recorded_at timestamptz NOT NULL DEFAULT now(),\n",
            "    recorded_at timestamptz NOT NULL DEFAULT now(),\n    source text,\n",
        )
        .replace(
            "CREATE INDEX journal_entry_activity_author_idx",
            "CREATE INDEX journal_entry_activity_author_idx2",
        );
    let changes = schema_tools::check(
        &server,
        "worker",
        &schema_tools::migration_dirs(&root, "worker"),
        &declaration,
    )
    .await
    .unwrap();
    let listed: Vec<String> = changes.iter().map(ToString::to_string).collect();
    assert_eq!(
        listed,
        [
            "+ column journal_entry_activity.source: text",
            "+ index CREATE INDEX journal_entry_activity_author_idx2 ON journal_entry_activity USING btree (author_user_id)",
            "- index CREATE INDEX journal_entry_activity_author_idx ON journal_entry_activity USING btree (author_user_id)",
        ],
        "{listed:#?}"
    );
    assert!(matches!(changes[0], Change::AddColumn { .. }));
}
