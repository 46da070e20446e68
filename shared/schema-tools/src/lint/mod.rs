//! `cargo xtask db lint`: every migration through squawk (a real Postgres migration linter)
//! and our backward-compatibility rules.
//!
//! Our rules look at each migration with the state the earlier migrations of the same schema
//! left: which tables existed before it (rules about locks and compatibility only apply to
//! those; a table created in the same migration is empty and unused) and which columns and
//! tables an earlier migration marked deprecated (`COMMENT ... IS 'deprecated: ...'`).

mod rules;
mod statements;

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result};
use rules::State;
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

pub(super) fn is_no_transaction(text: &str) -> bool {
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
