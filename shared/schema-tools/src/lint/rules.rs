//! Our backward-compatibility rules, checked with the state earlier migrations left.

use std::collections::BTreeSet;

use super::statements::statements;
use super::{Finding, is_no_transaction};

#[derive(Default)]
pub(super) struct State {
    tables: BTreeSet<String>,
    deprecated_tables: BTreeSet<String>,
    deprecated_columns: BTreeSet<(String, String)>,
    /// (file, line, table, constraint) added NOT VALID and not validated yet.
    not_valid: Vec<(String, usize, String, String)>,
}

/// Split the actions of an ALTER TABLE (after its name) on top-level commas.
fn actions(tokens: &[String]) -> Vec<&[String]> {
    let mut depth = 0;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        match token.as_str() {
            "(" => depth += 1,
            ")" => depth -= 1,
            "," if depth == 0 => {
                parts.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&tokens[start..]);
    parts
}

fn has(tokens: &[String], words: &[&str]) -> bool {
    tokens
        .windows(words.len())
        .any(|window| window.iter().zip(words).all(|(a, b)| a == b))
}

const NOT_COLUMN_AFTER_ADD: [&str; 6] = [
    "CONSTRAINT",
    "PRIMARY",
    "UNIQUE",
    "CHECK",
    "FOREIGN",
    "EXCLUDE",
];

impl State {
    pub(super) fn check_file(&mut self, file: &str, text: &str) -> Vec<Finding> {
        let mut findings = Vec::new();
        let mut report = |line: usize, rule: &str, message: String| {
            findings.push(Finding {
                file: file.to_owned(),
                line,
                rule: rule.to_owned(),
                message,
            });
        };
        let no_transaction = is_no_transaction(text);
        let statements = statements(text);
        if no_transaction && statements.len() != 1 {
            report(
                1,
                "no-transaction-single-statement",
                format!(
                    "a `-- no-transaction` migration must hold exactly one statement (it has {}): \
                     Postgres runs several statements sent at once in one implicit transaction, \
                     where CREATE INDEX CONCURRENTLY fails",
                    statements.len()
                ),
            );
        }
        let mut created: BTreeSet<String> = BTreeSet::new();
        let mut lock_timeout = false;
        let mut deprecated_tables = Vec::new();
        let mut deprecated_columns = Vec::new();
        let mut added_not_valid: BTreeSet<(String, String)> = BTreeSet::new();
        for statement in &statements {
            let line = statement.line;
            let existing = |table: &str| self.tables.contains(table) && !created.contains(table);
            let require_lock_timeout = |table: &str, lock_timeout: bool| {
                if existing(table) && !lock_timeout && !no_transaction {
                    Some(format!(
                        "`{table}` exists already: set `SET lock_timeout = '5s';` before \
                         locking it, so a long-running query cannot make this migration queue \
                         every other query behind it"
                    ))
                } else {
                    None
                }
            };
            if statement.starts(&["SET", "LOCK_TIMEOUT"])
                || statement.starts(&["SET", "LOCAL", "LOCK_TIMEOUT"])
            {
                lock_timeout = true;
            } else if statement.starts(&["CREATE", "TABLE"])
                || statement.starts(&["CREATE", "UNLOGGED", "TABLE"])
            {
                let at = if statement.is(1, "TABLE") { 2 } else { 3 };
                if let Some((name, _)) = statement.name_at(at) {
                    created.insert(name);
                }
            } else if statement.starts(&["DROP", "TABLE"]) {
                let mut index = 2;
                while let Some((name, next)) = statement.name_at(index) {
                    if !created.contains(&name) && !self.deprecated_tables.contains(&name) {
                        report(
                            line,
                            "drop-table",
                            format!(
                                "DROP TABLE {name}: only a table an earlier migration marked \
                                 deprecated (`COMMENT ON TABLE {name} IS 'deprecated: ...'`) may \
                                 be dropped, in a later release than the one that stopped using \
                                 it"
                            ),
                        );
                    }
                    if let Some(message) = require_lock_timeout(&name, lock_timeout) {
                        report(line, "lock-timeout", message);
                    }
                    if statement.is(next, ",") {
                        index = next + 1;
                    } else {
                        break;
                    }
                }
            } else if statement.starts(&["ALTER", "TABLE"]) {
                let Some((table, after)) = statement.name_at(2) else {
                    continue;
                };
                if !existing(&table) {
                    continue;
                }
                if let Some(message) = require_lock_timeout(&table, lock_timeout) {
                    report(line, "lock-timeout", message);
                }
                let body = &statement.tokens[after.min(statement.tokens.len())..];
                if body.first().is_some_and(|token| token == "RENAME") {
                    report(
                        line,
                        "rename",
                        format!(
                            "renaming in {table} breaks the release that is still running. \
                             Never rename in one deployment: add the new name, write both, \
                             switch reads, then deprecate and later drop the old one"
                        ),
                    );
                    continue;
                }
                for action in actions(body) {
                    let first = action.first().map(String::as_str);
                    if first == Some("ADD") {
                        let second = action.get(1).map(String::as_str).unwrap_or("");
                        if NOT_COLUMN_AFTER_ADD.contains(&second) {
                            let name = if second == "CONSTRAINT" {
                                action
                                    .get(2)
                                    .cloned()
                                    .unwrap_or_default()
                                    .to_ascii_lowercase()
                            } else {
                                String::new()
                            };
                            let is_fk_or_check =
                                has(action, &["FOREIGN", "KEY"]) || has(action, &["CHECK"]);
                            if is_fk_or_check && !has(action, &["NOT", "VALID"]) {
                                report(
                                    line,
                                    "constraint-not-valid",
                                    format!(
                                        "a foreign key or check on the existing table {table} \
                                         must be added NOT VALID and validated in a later \
                                         migration (VALIDATE CONSTRAINT), or it scans the table \
                                         under a lock that blocks writes"
                                    ),
                                );
                            } else if is_fk_or_check {
                                added_not_valid.insert((table.clone(), name.clone()));
                                self.not_valid
                                    .push((file.to_owned(), line, table.clone(), name));
                            }
                        } else {
                            let column = if second == "COLUMN" {
                                statement_name(action, 2)
                            } else {
                                statement_name(action, 1)
                            };
                            if has(action, &["NOT", "NULL"]) && !has(action, &["DEFAULT"]) {
                                report(
                                    line,
                                    "add-required-column",
                                    format!(
                                        "{table}.{column} is added NOT NULL without a DEFAULT: \
                                         the running release's inserts would fail. Add it \
                                         nullable or with a constant DEFAULT"
                                    ),
                                );
                            }
                            if has(action, &["REFERENCES"]) {
                                report(
                                    line,
                                    "constraint-not-valid",
                                    format!(
                                        "{table}.{column} is added with REFERENCES, which adds \
                                         a validated foreign key to an existing table: add the \
                                         column, then the constraint NOT VALID, then validate \
                                         it in a later migration"
                                    ),
                                );
                            }
                        }
                    } else if first == Some("DROP") {
                        let second = action.get(1).map(String::as_str).unwrap_or("");
                        let column = match second {
                            "CONSTRAINT" => None,
                            "COLUMN" => Some(statement_name(action, 2)),
                            _ => Some(statement_name(action, 1)),
                        };
                        if let Some(column) = column
                            && !self
                                .deprecated_columns
                                .contains(&(table.clone(), column.clone()))
                        {
                            report(
                                line,
                                "drop-column",
                                format!(
                                    "DROP COLUMN {table}.{column}: only a column an earlier \
                                     migration marked deprecated (`COMMENT ON COLUMN \
                                     {table}.{column} IS 'deprecated: ...'`) may be dropped, in \
                                     a later release than the one that stopped using it"
                                ),
                            );
                        }
                    } else if first == Some("ALTER") {
                        if has(action, &["TYPE"]) {
                            report(
                                line,
                                "alter-column-type",
                                format!(
                                    "changing a column type in {table} rewrites the table and \
                                     breaks the running release: add a new column, backfill, \
                                     switch, then deprecate the old one"
                                ),
                            );
                        }
                        if has(action, &["SET", "NOT", "NULL"]) {
                            report(
                                line,
                                "set-not-null",
                                format!(
                                    "SET NOT NULL on {table} breaks the running release's \
                                     inserts and scans the table under an exclusive lock: add \
                                     a CHECK (column IS NOT NULL) NOT VALID and validate it \
                                     later instead"
                                ),
                            );
                        }
                    } else if first == Some("VALIDATE") {
                        let name = statement_name(action, 2);
                        if added_not_valid.contains(&(table.clone(), name.clone())) {
                            report(
                                line,
                                "validate-separately",
                                format!(
                                    "{name} is added NOT VALID and validated in the same \
                                     migration (one transaction): validate it in a later \
                                     migration"
                                ),
                            );
                        }
                        self.not_valid
                            .retain(|(_, _, t, c)| !(t == &table && c == &name));
                    } else if first == Some("RENAME") {
                        report(
                            line,
                            "rename",
                            format!("renaming in {table} is not allowed"),
                        );
                    }
                }
            } else if statement.starts(&["CREATE", "INDEX"])
                || statement.starts(&["CREATE", "UNIQUE", "INDEX"])
            {
                let concurrently = statement.contains(&["INDEX", "CONCURRENTLY"]);
                let table = statement.table_after_on();
                if concurrently && !no_transaction {
                    report(
                        line,
                        "concurrently-outside-transaction",
                        "CREATE INDEX CONCURRENTLY cannot run in a transaction: put it alone \
                         in a migration whose first line is `-- no-transaction`"
                            .to_owned(),
                    );
                }
                if existing(&table) && !concurrently {
                    report(
                        line,
                        "index-concurrently",
                        format!(
                            "an index on the existing table {table} must be built with CREATE \
                             INDEX CONCURRENTLY (alone, in a `-- no-transaction` migration): a \
                             plain build blocks writes for its whole duration"
                        ),
                    );
                }
            } else if statement.starts(&["COMMENT", "ON", "COLUMN"]) {
                let (table, column) = match (statement.tokens.get(3), statement.tokens.get(5)) {
                    (Some(table), Some(column)) if statement.is(4, ".") => {
                        (table.to_ascii_lowercase(), column.to_ascii_lowercase())
                    }
                    _ => continue,
                };
                let deprecated = statement
                    .tokens
                    .last()
                    .is_some_and(|value| value.to_ascii_lowercase().starts_with("'deprecated"));
                deprecated_columns.push(((table, column), deprecated));
            } else if statement.starts(&["COMMENT", "ON", "TABLE"]) {
                let Some((table, _)) = statement.name_at(3) else {
                    continue;
                };
                let deprecated = statement
                    .tokens
                    .last()
                    .is_some_and(|value| value.to_ascii_lowercase().starts_with("'deprecated"));
                deprecated_tables.push((table, deprecated));
            } else if statement.starts(&["CREATE", "TRIGGER"])
                || statement.starts(&["CREATE", "OR", "REPLACE", "TRIGGER"])
            {
                let table = statement.table_after_on();
                if let Some(message) = require_lock_timeout(&table, lock_timeout) {
                    report(line, "lock-timeout", message);
                }
            }
        }
        // What this migration declares takes effect for the later ones only.
        for ((table, column), deprecated) in deprecated_columns {
            if deprecated {
                self.deprecated_columns.insert((table, column));
            } else {
                self.deprecated_columns.remove(&(table, column));
            }
        }
        for (table, deprecated) in deprecated_tables {
            if deprecated {
                self.deprecated_tables.insert(table);
            } else {
                self.deprecated_tables.remove(&table);
            }
        }
        self.tables.extend(created);
        for statement in &statements {
            if statement.starts(&["DROP", "TABLE"]) {
                let mut index = 2;
                while let Some((name, next)) = statement.name_at(index) {
                    self.tables.remove(&name);
                    if statement.is(next, ",") {
                        index = next + 1;
                    } else {
                        break;
                    }
                }
            }
        }
        findings
    }

    pub(super) fn unvalidated(&self) -> Vec<Finding> {
        self.not_valid
            .iter()
            .map(|(file, line, table, constraint)| Finding {
                file: file.clone(),
                line: *line,
                rule: "validate-not-valid".to_owned(),
                message: format!(
                    "{table}.{constraint} is added NOT VALID but no later migration validates \
                     it (ALTER TABLE {table} VALIDATE CONSTRAINT {constraint})"
                ),
            })
            .collect()
    }
}

/// The identifier at `index` of an action, skipping IF [NOT] EXISTS.
fn statement_name(action: &[String], mut index: usize) -> String {
    while matches!(
        action.get(index).map(String::as_str),
        Some("IF") | Some("NOT") | Some("EXISTS")
    ) {
        index += 1;
    }
    action
        .get(index)
        .map(|name| name.to_ascii_lowercase())
        .unwrap_or_default()
}
