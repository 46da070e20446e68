//! The typed model of one schema, as introspected from `pg_catalog`. Names are stored the
//! way `quote_ident` renders them, definitions the way `pg_get_*def` renders them with the
//! schema name removed, so two databases with the same schema compare equal.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    pub tables: BTreeMap<String, Table>,
    /// By signature, e.g. `outbox_notify()`.
    pub functions: BTreeMap<String, Function>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    /// In column order.
    pub columns: Vec<Column>,
    pub constraints: BTreeMap<String, Constraint>,
    /// Indexes that do not back a primary-key, unique or exclusion constraint.
    pub indexes: BTreeMap<String, Index>,
    pub triggers: BTreeMap<String, Trigger>,
    pub comment: Option<String>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|column| column.name == name)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `format_type`, e.g. `timestamp with time zone`.
    pub data_type: String,
    pub not_null: bool,
    pub default: Option<String>,
    /// The default calls a volatile function (so adding the column would rewrite the table).
    pub volatile_default: bool,
    /// `serial`, `bigserial` or `smallserial` when the column owns its sequence.
    pub serial: Option<String>,
    /// `a` (ALWAYS) or `d` (BY DEFAULT) for identity columns.
    pub identity: Option<String>,
    pub comment: Option<String>,
}

impl Column {
    /// Marked deprecated (first step of a two-step removal).
    pub fn is_deprecated(&self) -> bool {
        is_deprecation(self.comment.as_deref())
    }
}

/// A comment that marks a column or table deprecated: `deprecated: <reason>`.
pub fn is_deprecation(comment: Option<&str>) -> bool {
    comment.is_some_and(|comment| {
        comment
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("deprecated")
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub name: String,
    /// `p` primary key, `u` unique, `f` foreign key, `c` check, `x` exclusion, `t` trigger.
    pub kind: String,
    /// `pg_get_constraintdef` without a trailing ` NOT VALID`.
    pub definition: String,
    pub validated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub name: String,
    /// `pg_get_indexdef` with the table unqualified.
    pub definition: String,
    pub valid: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub name: String,
    pub definition: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub signature: String,
    /// `pg_get_functiondef` with the function name unqualified.
    pub definition: String,
}
