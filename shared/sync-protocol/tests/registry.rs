//! The table registry against the code: every `impl SyncedRow` in the services names a table
//! the registry lists with that service as its writer, and every registered table has such a
//! row type. The list of synced row types is read from the services' sources, so a new one
//! cannot be left out of a hand-kept list: adding a `SyncedRow` without registering its table
//! (or a registry entry without a row type, or under another writer) fails here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sync_protocol::tables::SYNCED_TABLES;

/// A `SyncedRow` implementation found in a service's sources.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FoundRow {
    table: String,
    service: String,
    /// `path:line` of the `impl`, for messages.
    at: String,
}

fn services_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../services")
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

/// The string literal in `line` after `prefix` (`const TABLE: &'static str = "…";`).
fn literal_after<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = line.trim().strip_prefix(prefix)?.trim();
    rest.strip_prefix('"')?.strip_suffix("\";")
}

/// The service's name as it declares itself in its lib.rs: `service: "…",` in its
/// `bus::service_identity!` (or a plain `pub const SERVICE: &str = "…";`).
fn service_name(service_dir: &Path) -> String {
    let lib = std::fs::read_to_string(service_dir.join("src/lib.rs")).unwrap();
    let declared = lib.contains("bus::service_identity!");
    lib.lines()
        .find_map(|line| {
            if declared {
                let rest = line.trim().strip_prefix("service:")?.trim();
                rest.strip_prefix('"')?.strip_suffix("\",")
            } else {
                literal_after(line, "pub const SERVICE: &str =")
            }
        })
        .unwrap_or_else(|| panic!("no service name declared in {}", service_dir.display()))
        .to_owned()
}

/// Every `impl … SyncedRow for …` in the services' `src`, with the literal of its `TABLE`.
fn synced_rows_in_services() -> Vec<FoundRow> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(services_dir()).unwrap() {
        let service_dir = entry.unwrap().path();
        if !service_dir.join("src/lib.rs").is_file() {
            continue;
        }
        let service = service_name(&service_dir);
        let mut files = Vec::new();
        rust_files(&service_dir.join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (index, line) in lines.iter().enumerate() {
                let line = line.trim();
                if !(line.starts_with("impl ") && line.contains("SyncedRow for ")) {
                    continue;
                }
                let at = format!("{}:{}", file.display(), index + 1);
                // The `TABLE` constant within the impl block (before its closing brace).
                let table = lines[index + 1..]
                    .iter()
                    .take_while(|line| !line.starts_with('}') && !line.trim().starts_with("impl "))
                    .find_map(|line| literal_after(line, "const TABLE: &'static str ="))
                    .unwrap_or_else(|| {
                        panic!("{at}: no `const TABLE: &'static str = \"…\";` literal in the impl")
                    });
                found.push(FoundRow {
                    table: table.to_owned(),
                    service: service.clone(),
                    at,
                });
            }
        }
    }
    found.sort();
    found
}

#[test]
fn the_scan_finds_the_known_synced_rows() {
    // Guards the scan itself: if it found nothing it would prove nothing.
    let found = synced_rows_in_services();
    let tables: BTreeSet<&str> = found.iter().map(|row| row.table.as_str()).collect();
    assert!(tables.contains("journal_entries"), "{found:#?}");
    assert!(tables.contains("entry_insights"), "{found:#?}");
}

#[test]
fn every_synced_row_is_registered_with_its_service_as_the_writer() {
    for row in synced_rows_in_services() {
        let registered = SYNCED_TABLES.iter().find(|table| table.name == row.table);
        let Some(registered) = registered else {
            panic!("{}: {} is not in SYNCED_TABLES", row.at, row.table);
        };
        assert_eq!(
            registered.written_by, row.service,
            "{}: {} is synced by {} in the registry, not by {}",
            row.at, row.table, registered.written_by, row.service
        );
    }
}

#[test]
fn every_registered_table_has_a_synced_row_in_its_writer() {
    let found: BTreeSet<(String, String)> = synced_rows_in_services()
        .into_iter()
        .map(|row| (row.table, row.service))
        .collect();
    for table in SYNCED_TABLES {
        assert!(
            found.contains(&(table.name.to_owned(), table.written_by.to_owned())),
            "SYNCED_TABLES lists {} written by {}, but that service has no SyncedRow for it",
            table.name,
            table.written_by
        );
    }
}
