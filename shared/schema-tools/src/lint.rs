//! `cargo xtask db lint`: every migration through squawk (a real Postgres migration linter)
//! and our backward-compatibility rules.
//!
//! Our rules look at each migration with the state the earlier migrations of the same schema
//! left: which tables existed before it (rules about locks and compatibility only apply to
//! those; a table created in the same migration is empty and unused) and which columns and
//! tables an earlier migration marked deprecated (`COMMENT ... IS 'deprecated: ...'`).

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result};
use squawk_linter::{Linter, Rule};
use squawk_syntax::SourceFile;

/// squawk rules we switch off, and why (also in docs/migrations.md):
/// - prefer-bigint-over-int / prefer-bigint-over-smallint / prefer-identity: type style; the
///   schemas use `integer` counters, a `smallint` mood and `bigserial` deliberately.
/// - require-statement-timeout: concurrent index builds and constraint validations are meant
///   to run as long as they need; `lock_timeout` (our rule below) is what protects traffic.
/// - require-lock-timeout: squawk also asks for it before indexes on tables created in the
///   same migration and in `-- no-transaction` files, where it cannot be set next to the
///   statement; our `lock-timeout` rule asks for it wherever a pre-existing table is locked.
pub const EXCLUDED_SQUAWK_RULES: [Rule; 5] = [
    Rule::PreferBigintOverInt,
    Rule::PreferBigintOverSmallint,
    Rule::PreferIdentity,
    Rule::RequireStatementTimeout,
    Rule::RequireLockTimeout,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    /// `squawk:<rule>` or our rule name.
    pub rule: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: [{}] {}",
            self.file, self.line, self.rule, self.message
        )
    }
}

/// Lint every `*.sql` of a schema's migration directory, in version order.
pub fn lint_dir(dir: &Path) -> Result<Vec<Finding>> {
    lint_dirs(&[dir.to_path_buf()])
}

/// Lint every `*.sql` of a schema's migration directories (the bus's and its own), in
/// version order across them, as they apply.
pub fn lint_dirs(dirs: &[std::path::PathBuf]) -> Result<Vec<Finding>> {
    let mut files = Vec::new();
    for dir in dirs {
        read_sql_files(dir, &mut files)?;
    }
    files.sort_by_key(|(name, _)| {
        name.split_once('_')
            .and_then(|(version, _)| version.parse::<i64>().ok())
            .unwrap_or(i64::MAX)
    });
    Ok(lint_files(&files))
}

fn read_sql_files(dir: &Path, files: &mut Vec<(String, String)>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "sql") {
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            files.push((name, text));
        }
    }
    Ok(())
}

/// Lint migrations given as (file name, SQL), in the order they apply.
pub fn lint_files(files: &[(String, String)]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut state = State::default();
    for (name, text) in files {
        findings.extend(squawk(name, text));
        findings.extend(state.check_file(name, text));
    }
    findings.extend(state.unvalidated());
    findings
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn is_no_transaction(text: &str) -> bool {
    text.starts_with("-- no-transaction")
}

fn squawk(name: &str, text: &str) -> Vec<Finding> {
    let parse = SourceFile::parse(text);
    let mut findings: Vec<Finding> = parse
        .errors()
        .into_iter()
        .map(|error| Finding {
            file: name.to_owned(),
            line: 1,
            rule: "squawk:syntax".to_owned(),
            message: error.to_string(),
        })
        .collect();
    let mut linter = Linter::with_rules(&[], &EXCLUDED_SQUAWK_RULES);
    linter.settings.assume_in_transaction = !is_no_transaction(text);
    for violation in linter.lint(&parse, text) {
        let rule = format!("{:?}", violation.code);
        let mut message = violation.message.clone();
        if let Some(help) = &violation.help {
            message.push(' ');
            message.push_str(help);
        }
        findings.push(Finding {
            file: name.to_owned(),
            line: line_of(text, usize::from(violation.text_range.start())),
            rule: format!("squawk:{}", kebab(&rule)),
            message,
        });
    }
    findings
}

fn kebab(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// One SQL statement: its tokens (keywords upper-cased, identifiers lower-cased and
/// unquoted, string literals kept with their quotes) and its first line.
#[derive(Debug)]
struct Statement {
    tokens: Vec<String>,
    line: usize,
}

impl Statement {
    fn is(&self, index: usize, word: &str) -> bool {
        self.tokens.get(index).is_some_and(|token| token == word)
    }
    fn starts(&self, words: &[&str]) -> bool {
        words.iter().enumerate().all(|(i, word)| self.is(i, word))
    }
    fn contains(&self, words: &[&str]) -> bool {
        self.tokens
            .windows(words.len())
            .any(|window| window.iter().zip(words).all(|(a, b)| a == b))
    }
    /// The (unqualified) name starting at `index`, skipping IF [NOT] EXISTS / ONLY.
    fn name_at(&self, mut index: usize) -> Option<(String, usize)> {
        while matches!(
            self.tokens.get(index).map(String::as_str),
            Some("IF") | Some("NOT") | Some("EXISTS") | Some("ONLY")
        ) {
            index += 1;
        }
        let mut name = self.tokens.get(index)?.to_ascii_lowercase();
        index += 1;
        while self.is(index, ".") {
            name = self.tokens.get(index + 1)?.to_ascii_lowercase();
            index += 2;
        }
        Some((name, index))
    }
}

/// Split SQL into statements (outside comments, strings, quoted names and dollar quotes).
fn statements(text: &str) -> Vec<Statement> {
    let chars: Vec<char> = text.chars().collect();
    let mut statements = Vec::new();
    let mut tokens: Vec<String> = Vec::new();
    let mut line = 1;
    let mut start_line = 1;
    let mut i = 0;
    let push = |tokens: &mut Vec<String>, start_line: &mut usize, line: usize, token: String| {
        if tokens.is_empty() {
            *start_line = line;
        }
        tokens.push(token);
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                if chars[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 2;
        } else if c == '\'' || c == '"' {
            let quote = c;
            let mut token = String::new();
            i += 1;
            while i < chars.len() {
                if chars[i] == quote {
                    if chars.get(i + 1) == Some(&quote) {
                        token.push(quote);
                        i += 2;
                        continue;
                    }
                    break;
                }
                if chars[i] == '\n' {
                    line += 1;
                }
                token.push(chars[i]);
                i += 1;
            }
            i += 1;
            let token = if quote == '\'' {
                format!("'{token}'")
            } else {
                token.to_ascii_lowercase()
            };
            push(&mut tokens, &mut start_line, line, token);
        } else if c == '$' {
            // $tag$ ... $tag$
            let mut j = i + 1;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            if chars.get(j) == Some(&'$') {
                let tag: String = chars[i..=j].iter().collect();
                let rest: String = chars[j + 1..].iter().collect();
                let end = rest
                    .find(&tag)
                    .map(|end| end + tag.len())
                    .unwrap_or(rest.len());
                let body: String = rest.chars().take(end).collect();
                line += body.matches('\n').count();
                i = j + 1 + body.chars().count();
                push(&mut tokens, &mut start_line, line, "$BODY$".to_owned());
            } else {
                i += 1;
            }
        } else if c == ';' {
            if !tokens.is_empty() {
                statements.push(Statement {
                    tokens: std::mem::take(&mut tokens),
                    line: start_line,
                });
            }
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let mut word = String::new();
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                word.push(chars[i]);
                i += 1;
            }
            push(
                &mut tokens,
                &mut start_line,
                line,
                word.to_ascii_uppercase(),
            );
        } else {
            push(&mut tokens, &mut start_line, line, c.to_string());
            i += 1;
        }
    }
    if !tokens.is_empty() {
        statements.push(Statement {
            tokens,
            line: start_line,
        });
    }
    statements
}

#[derive(Default)]
struct State {
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
    fn check_file(&mut self, file: &str, text: &str) -> Vec<Finding> {
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
                let table = statement
                    .tokens
                    .iter()
                    .position(|token| token == "ON")
                    .and_then(|on| statement.name_at(on + 1))
                    .map(|(name, _)| name)
                    .unwrap_or_default();
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
                let table = statement
                    .tokens
                    .iter()
                    .position(|token| token == "ON")
                    .and_then(|on| statement.name_at(on + 1))
                    .map(|(name, _)| name)
                    .unwrap_or_default();
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

    fn unvalidated(&self) -> Vec<Finding> {
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
