//! `cargo xtask db ...`: migrations per schema and demo data.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use sqlx::migrate::Migrator;

use crate::{infra, repo_root};

/// The schemas, one per service, in dependency order.
pub const SCHEMAS: [&str; 5] = ["api", "sync", "worker", "cron", "notifier"];

#[derive(Subcommand)]
pub enum DbCommand {
    /// Create an empty migration file `migrations/<schema>/<timestamp>_<name>.sql`.
    New { schema: String, name: String },
    /// Apply pending migrations for one schema, or all when none is given.
    Up { schema: Option<String> },
    /// Load demo data (`seeds/*.sql`, in name order, each in one transaction). Idempotent.
    Seed,
}

pub async fn run(command: DbCommand) -> Result<()> {
    match command {
        DbCommand::New { schema, name } => new_migration(&schema, &name),
        DbCommand::Up { schema } => {
            let endpoints = infra::ensure().await?;
            let schemas = match schema {
                Some(schema) => vec![checked_schema(&schema)?],
                None => SCHEMAS.to_vec(),
            };
            for schema in schemas {
                migrate(&endpoints.database_url, schema).await?;
            }
            Ok(())
        }
        DbCommand::Seed => {
            let endpoints = infra::ensure().await?;
            for schema in SCHEMAS {
                migrate(&endpoints.database_url, schema).await?;
            }
            seed(&endpoints.database_url).await
        }
    }
}

fn checked_schema(schema: &str) -> Result<&'static str> {
    match SCHEMAS.iter().find(|known| **known == schema) {
        Some(known) => Ok(known),
        None => bail!(
            "unknown schema `{schema}`; the schemas are {}",
            SCHEMAS.join(", ")
        ),
    }
}

fn migrations_dir(schema: &str) -> PathBuf {
    repo_root().join("migrations").join(schema)
}

fn new_migration(schema: &str, name: &str) -> Result<()> {
    let schema = checked_schema(schema)?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        bail!("migration name `{name}` must be snake_case (a-z, 0-9, _)");
    }
    let version = chrono::Utc::now().format("%Y%m%d%H%M%S");
    let path = migrations_dir(schema).join(format!("{version}_{name}.sql"));
    std::fs::create_dir_all(migrations_dir(schema))?;
    let header = format!(
        "-- {name} ({schema} schema)\n\
         -- Backward compatible only: add nullable or defaulted columns; drop in a later release;\n\
         -- never rename in one release. Unqualified names resolve to the `{schema}` schema.\n"
    );
    std::fs::write(&path, header).with_context(|| format!("writing {}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}

/// Apply `schema`'s pending migrations, exactly as its service does at start.
pub async fn migrate(database_url: &str, schema: &str) -> Result<()> {
    let migrator = Migrator::new(migrations_dir(schema))
        .await
        .with_context(|| format!("reading migrations/{schema}"))?;
    let pool = platform::db::connect(&infra::secret(database_url), schema, 2).await?;
    platform::db::migrate(&pool, schema, &migrator).await?;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await?;
    println!("{schema}: {applied} migration(s) applied");
    pool.close().await;
    Ok(())
}

async fn seed(database_url: &str) -> Result<()> {
    let dir = repo_root().join("seeds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    if files.is_empty() {
        println!("no seed files in {}", dir.display());
        return Ok(());
    }
    let pool = platform::db::connect(&infra::secret(database_url), "public", 2).await?;
    for file in files {
        let sql = std::fs::read_to_string(&file)?;
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(&sql)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("seeding {}", file.display()))?;
        tx.commit().await?;
        println!("seeded {}", file.display());
    }
    pool.close().await;
    Ok(())
}
