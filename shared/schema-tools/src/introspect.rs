//! Read a schema from `pg_catalog` into the [`model`](crate::model). The pool's search_path
//! must be the schema, so that definitions render with unqualified names.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, anyhow};
use sqlx::PgPool;

use crate::model::{Column, Constraint, Function, Index, Schema, Table, Trigger};

const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

fn unqualify(definition: &str, schema: &str) -> String {
    let quoted = platform::db::quote_identifier(schema);
    definition
        .replace(&format!(" ON {schema}."), " ON ")
        .replace(&format!(" ON ONLY {schema}."), " ON ONLY ")
        .replace(&format!(" ON {quoted}."), " ON ")
        .replace(&format!("FUNCTION {schema}."), "FUNCTION ")
        .replace(&format!("PROCEDURE {schema}."), "PROCEDURE ")
}

pub async fn introspect(pool: &PgPool, schema: &str) -> Result<Schema> {
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();

    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT quote_ident(c.relname), obj_description(c.oid, 'pg_class')
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relname <> $2",
    )
    .bind(schema)
    .bind(MIGRATIONS_TABLE)
    .fetch_all(pool)
    .await?;
    for (name, comment) in rows {
        tables.insert(
            name.clone(),
            Table {
                name,
                comment,
                ..Table::default()
            },
        );
    }

    type ColumnRow = (
        String,
        String,
        String,
        bool,
        Option<String>,
        String,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<ColumnRow> = sqlx::query_as(
        "SELECT quote_ident(c.relname), quote_ident(a.attname),
                format_type(a.atttypid, a.atttypmod), a.attnotnull,
                pg_get_expr(d.adbin, d.adrelid), a.attidentity::text,
                col_description(c.oid, a.attnum),
                (SELECT s.relname::text FROM pg_depend sd JOIN pg_class s ON s.oid = sd.objid
                  WHERE sd.classid = 'pg_class'::regclass AND sd.refclassid = 'pg_class'::regclass
                    AND sd.refobjid = c.oid AND sd.refobjsubid = a.attnum
                    AND s.relkind = 'S' AND sd.deptype = 'a' LIMIT 1)
         FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relname <> $2
           AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY c.relname, a.attnum",
    )
    .bind(schema)
    .bind(MIGRATIONS_TABLE)
    .fetch_all(pool)
    .await?;
    let mut called: BTreeSet<String> = BTreeSet::new();
    for (table, name, data_type, not_null, default, identity, comment, owned_sequence) in rows {
        let serial = match (&owned_sequence, &default) {
            (Some(sequence), Some(default))
                if default == &format!("nextval('{sequence}'::regclass)") =>
            {
                match data_type.as_str() {
                    "bigint" => Some("bigserial".to_owned()),
                    "integer" => Some("serial".to_owned()),
                    "smallint" => Some("smallserial".to_owned()),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(default) = &default {
            called.extend(function_calls(default));
        }
        let column = Column {
            name,
            data_type,
            not_null,
            default,
            volatile_default: false,
            serial,
            identity: Some(identity).filter(|identity| !identity.is_empty()),
            comment,
        };
        tables
            .get_mut(&table)
            .ok_or_else(|| anyhow!("column of unknown table {table}"))?
            .columns
            .push(column);
    }

    // Volatility of the functions defaults call (built-in functions are pinned, so pg_depend
    // does not record them: look them up by name, any volatile overload counts).
    let names: Vec<String> = called.into_iter().collect();
    let volatile: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT proname::text FROM pg_proc WHERE proname = ANY($1) AND provolatile = 'v'",
    )
    .bind(&names)
    .fetch_all(pool)
    .await?;
    for table in tables.values_mut() {
        for column in &mut table.columns {
            if let Some(default) = &column.default {
                column.volatile_default = function_calls(default)
                    .iter()
                    .any(|name| volatile.contains(name));
            }
        }
    }

    let rows: Vec<(String, String, String, String, bool)> = sqlx::query_as(
        "SELECT quote_ident(c.relname), quote_ident(con.conname), con.contype::text,
                pg_get_constraintdef(con.oid), con.convalidated
         FROM pg_constraint con
         JOIN pg_class c ON c.oid = con.conrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname <> $2",
    )
    .bind(schema)
    .bind(MIGRATIONS_TABLE)
    .fetch_all(pool)
    .await?;
    for (table, name, kind, definition, validated) in rows {
        let definition = definition
            .strip_suffix(" NOT VALID")
            .unwrap_or(&definition)
            .to_owned();
        if let Some(table) = tables.get_mut(&table) {
            table.constraints.insert(
                name.clone(),
                Constraint {
                    name,
                    kind,
                    definition,
                    validated,
                },
            );
        }
    }

    let rows: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT quote_ident(t.relname), quote_ident(i.relname), pg_get_indexdef(i.oid), x.indisvalid
         FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_class t ON t.oid = x.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = $1 AND t.relname <> $2
           AND NOT EXISTS (SELECT 1 FROM pg_constraint con
                           WHERE con.conindid = i.oid AND con.conrelid = t.oid
                             AND con.contype IN ('p', 'u', 'x'))",
    )
    .bind(schema)
    .bind(MIGRATIONS_TABLE)
    .fetch_all(pool)
    .await?;
    for (table, name, definition, valid) in rows {
        if let Some(table) = tables.get_mut(&table) {
            table.indexes.insert(
                name.clone(),
                Index {
                    name,
                    definition: unqualify(&definition, schema),
                    valid,
                },
            );
        }
    }

    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT quote_ident(c.relname), quote_ident(tg.tgname), pg_get_triggerdef(tg.oid)
         FROM pg_trigger tg
         JOIN pg_class c ON c.oid = tg.tgrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND NOT tg.tgisinternal",
    )
    .bind(schema)
    .fetch_all(pool)
    .await?;
    for (table, name, definition) in rows {
        if let Some(table) = tables.get_mut(&table) {
            table.triggers.insert(
                name.clone(),
                Trigger {
                    name,
                    definition: unqualify(&definition, schema),
                },
            );
        }
    }

    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')',
                pg_get_functiondef(p.oid)
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = $1 AND p.prokind IN ('f', 'p')",
    )
    .bind(schema)
    .fetch_all(pool)
    .await?;
    let functions = rows
        .into_iter()
        .map(|(signature, definition)| {
            (
                signature.clone(),
                Function {
                    signature,
                    definition: unqualify(&definition, schema),
                },
            )
        })
        .collect();

    Ok(Schema { tables, functions })
}

/// The names of the functions an expression calls (`name(`, outside string literals).
pub fn function_calls(expression: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    let mut in_string = false;
    for c in expression.chars() {
        if in_string {
            if c == '\'' {
                in_string = false;
            }
            continue;
        }
        if c == '\'' {
            in_string = true;
            word.clear();
        } else if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            if c == '(' && !word.is_empty() && !word.starts_with(|c: char| c.is_ascii_digit()) {
                names.push(word.to_ascii_lowercase());
            }
            word.clear();
        }
    }
    names.sort();
    names.dedup();
    names
}
