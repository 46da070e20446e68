//! `cargo xtask db ...`: migrations per schema and demo data.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use schema_tools::SCHEMAS;

use crate::{infra, repo_root};

#[derive(Subcommand)]
pub enum DbCommand {
    /// Create an empty migration file `migrations/<schema>/<timestamp>_<name>.sql`.
    New { schema: String, name: String },
    /// Apply pending migrations for one schema, or all when none is given.
    Up { schema: Option<String> },
    /// Seed the demo data through the running api's own procedures (so it syncs and reaches
    /// the worker); `cargo xtask dev` does this by itself. Idempotent. See seeds/README.md.
    Seed {
        /// The api to seed through.
        #[arg(long, env = "API_URL", default_value = crate::dev::API_URL)]
        api_url: String,
    },
    /// Create the services' database roles and their schemas (idempotent; `dev`, `test`,
    /// `infra` and `up` do it too), and print the URL each service uses.
    Roles,
    /// Generate the next migration of `<schema>` from its declaration
    /// (`services/<service>/schema.sql`): only backward-compatible DDL; anything else is
    /// refused with the two-step path (see docs/migrations.md).
    #[command(name = "g", alias = "generate")]
    Generate {
        schema: String,
        name: String,
        /// Second step of a removal: drop columns/tables an earlier migration marked
        /// deprecated and the declaration no longer has.
        #[arg(long)]
        allow_drop: bool,
    },
    /// Fail when a declaration and what its migrations produce differ (drift).
    Check { schema: Option<String> },
    /// Lint every migration: squawk plus our backward-compatibility rules.
    Lint { schema: Option<String> },
}

fn schemas(schema: Option<String>) -> Result<Vec<&'static str>> {
    Ok(match schema {
        Some(schema) => vec![checked_schema(&schema)?],
        None => SCHEMAS.to_vec(),
    })
}

pub async fn run(command: DbCommand) -> Result<()> {
    match command {
        DbCommand::Generate {
            schema,
            name,
            allow_drop,
        } => generate(&schema, &name, allow_drop).await,
        DbCommand::Check { schema } => check(schemas(schema)?).await,
        DbCommand::Lint { schema } => lint(schemas(schema)?),
        DbCommand::New { schema, name } => new_migration(&schema, &name),
        DbCommand::Up { schema } => {
            let endpoints = infra::ensure().await?;
            for schema in schemas(schema)? {
                migrate_as_owner(&endpoints.database_url, schema).await?;
            }
            Ok(())
        }
        DbCommand::Seed { api_url } => seed(&api_url).await,
        DbCommand::Roles => {
            let database_url = infra::ensure_postgres_only().await?;
            infra::ensure_roles(&database_url).await?;
            for role in platform::roles::SERVICE_ROLES {
                let url = infra::service_database_url(&database_url, role.service)?;
                println!(
                    "{:>13}: role {} owns schema {}  DATABASE_URL={}",
                    role.service,
                    role.role,
                    role.schema,
                    without_password(&url)
                );
            }
            Ok(())
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
    schema_tools::migrations_dir(&repo_root(), schema)
}

/// The bus's migrations and the schema's own: what the schema's service applies.
fn migration_dirs(schema: &str) -> Vec<PathBuf> {
    schema_tools::migration_dirs(&repo_root(), schema)
}

fn checked_name(name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        bail!("migration name `{name}` must be snake_case (a-z, 0-9, _)");
    }
    Ok(())
}

fn now_version() -> Result<i64> {
    Ok(chrono::Utc::now()
        .format("%Y%m%d%H%M%S")
        .to_string()
        .parse()?)
}

async fn generate(schema: &str, name: &str, allow_drop: bool) -> Result<()> {
    let schema = checked_schema(schema)?;
    checked_name(name)?;
    let server = infra::ensure_postgres_only().await?;
    let root = repo_root();
    let dir = migrations_dir(schema);
    let dirs = migration_dirs(schema);
    let declaration = schema_tools::declaration(&root, schema)?;
    let options = schema_tools::Options {
        name: name.to_owned(),
        version: schema_tools::next_version(&dirs, now_version()?)?,
        allow_drop,
    };
    let files = schema_tools::generate(&server, schema, &dirs, &declaration, &options).await?;
    if files.is_empty() {
        println!(
            "{schema}: the migrations already produce the declared schema; nothing to generate"
        );
        return Ok(());
    }
    for path in schema_tools::write_files(&dir, &files)? {
        println!("{}", path.display());
    }
    Ok(())
}

async fn check(schemas: Vec<&'static str>) -> Result<()> {
    let server = infra::ensure_postgres_only().await?;
    let root = repo_root();
    let mut drifted = Vec::new();
    for schema in schemas {
        let declaration_path = schema_tools::declaration_path(&root, schema)?;
        let declaration = schema_tools::declaration(&root, schema)?;
        let changes =
            schema_tools::check(&server, schema, &migration_dirs(schema), &declaration).await?;
        if changes.is_empty() {
            println!(
                "{schema}: migrations match shared/bus/schema.sql + {}",
                declaration_path.display()
            );
        } else {
            println!(
                "{schema}: shared/bus/schema.sql + {} differ from what shared/bus/migrations + \
                 migrations/{schema} produce (+ declared only, - migrated only, ~ different):",
                declaration_path.display()
            );
            for change in &changes {
                println!("  {change}");
            }
            drifted.push(schema);
        }
    }
    if !drifted.is_empty() {
        bail!(
            "drift in {}: run `cargo xtask db g <schema> <name>` to generate the migration, or \
             fix the declaration",
            drifted.join(", ")
        );
    }
    Ok(())
}

fn lint(schemas: Vec<&'static str>) -> Result<()> {
    let mut total = 0;
    for schema in schemas {
        let findings = schema_tools::lint::lint_dirs(&migration_dirs(schema))?;
        for finding in &findings {
            // A finding names its file: the bus's are in shared/bus/migrations, the rest in
            // migrations/<schema>.
            println!("{schema}: {finding}");
        }
        if findings.is_empty() {
            println!("{schema}: migrations pass squawk and the backward-compatibility rules");
        }
        total += findings.len();
    }
    if total > 0 {
        bail!("{total} migration lint finding(s)");
    }
    Ok(())
}

fn new_migration(schema: &str, name: &str) -> Result<()> {
    let schema = checked_schema(schema)?;
    checked_name(name)?;
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

/// `url` with its password (if any) masked: the role name is what the reader needs.
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => crate::dev::redact(url),
    }
}

/// Apply `schema`'s pending migrations as the role that owns it, as its service does at
/// start, so the tables belong to that role.
async fn migrate_as_owner(admin_url: &str, schema: &str) -> Result<()> {
    migrate(&infra::schema_database_url(admin_url, schema)?, schema).await
}

/// Apply `schema`'s pending migrations, exactly as its service does at start (the same
/// `schema_tools::migrate` the generator's scratch databases and the tests use).
pub async fn migrate(database_url: &str, schema: &str) -> Result<()> {
    let applied = schema_tools::migrate(database_url, schema, &migration_dirs(schema)).await?;
    println!("{schema}: {applied} migration(s) applied");
    Ok(())
}

async fn seed(api_url: &str) -> Result<()> {
    let seeded = demo_seed::seed(&reqwest::Client::new(), api_url)
        .await
        .with_context(|| {
            format!(
                "seeding through the api at {api_url} (start the system with `cargo xtask dev`, \
                 which seeds by itself, or point --api-url / API_URL at a running api with \
                 AUTH_DEV_LOGIN=true)"
            )
        })?;
    println!(
        "seeded through {api_url}: {} row(s) created (demo user {}, team {})",
        seeded.created, seeded.demo_user_id, seeded.team_id
    );
    Ok(())
}
