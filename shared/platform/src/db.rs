//! The Postgres pool: one schema per service, its own migration history.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::PlatformError;

/// Open a pool whose connections resolve unqualified names in `schema` first, create the
/// schema if needed, and apply the service's migrations. Because `search_path` starts with
/// the schema, sqlx keeps the migration history in `<schema>._sqlx_migrations`, so each
/// service has its own history even though all share one database.
pub async fn connect_and_migrate(
    database_url: &SecretString,
    schema: &str,
    max_connections: u32,
    migrator: &Migrator,
) -> Result<PgPool, PlatformError> {
    let pool = connect(database_url, schema, max_connections).await?;
    migrate(&pool, schema, migrator).await?;
    Ok(pool)
}

/// A pooled connection idle at least this long is pinged before it is handed out.
const CHECKOUT_PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Open a pool for `schema` without migrating.
pub async fn connect(
    database_url: &SecretString,
    schema: &str,
    max_connections: u32,
) -> Result<PgPool, PlatformError> {
    connect_with_password(database_url, None, schema, max_connections).await
}

/// [`connect`], with `password` (`DATABASE_PASSWORD`) replacing any password in the URL.
pub async fn connect_with_password(
    database_url: &SecretString,
    password: Option<&SecretString>,
    schema: &str,
    max_connections: u32,
) -> Result<PgPool, PlatformError> {
    let mut options = PgConnectOptions::from_str(database_url.expose_secret())?
        .options([("search_path", schema)])
        .application_name(schema);
    if let Some(password) = password {
        options = options.password(password.expose_secret());
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        // After a Postgres restart every pooled connection is dead; testing on checkout
        // drops them so the first query after the restart succeeds instead of failing once.
        // Only connections that sat idle are tested: sqlx already tests each one when it is
        // released, so a connection back within the last second is live unless Postgres
        // died in that second, and under load the round trip per checkout (two per api
        // call) cost throughput (docs/benchmarks.md, `rpc-create`).
        .test_before_acquire(false)
        .before_acquire(|connection, metadata| {
            Box::pin(async move {
                if metadata.idle_for >= CHECKOUT_PING_AFTER_IDLE {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Create the schema if needed and apply pending migrations, holding a lock of this schema's
/// own so that replicas of one service migrate one at a time while other services' schemas
/// migrate alongside.
///
/// sqlx's built-in lock is not used: it is one lock per database, taken with a blocking
/// `pg_advisory_lock`. A service waiting in that call holds a snapshot, and a migration
/// running `CREATE INDEX CONCURRENTLY` waits for every older snapshot in the database, so two
/// services starting together deadlocked (Postgres aborted the waiters). Ours is polled with
/// `pg_try_advisory_lock`, whose short statements never hold a snapshot for long.
pub async fn migrate(
    pool: &PgPool,
    schema: &str,
    migrator: &Migrator,
) -> Result<(), PlatformError> {
    ensure_schema(pool, schema).await?;
    // A session-level lock: the same connection must take it, migrate and release it.
    let mut connection = pool.acquire().await?;
    let mut said_waiting = false;
    loop {
        let locked: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_lock(hashtext('schema-migrations'), hashtext($1))",
        )
        .bind(schema)
        .fetch_one(&mut *connection)
        .await?;
        if locked {
            break;
        }
        if !said_waiting {
            tracing::info!(schema, "another process is migrating this schema; waiting");
            said_waiting = true;
        }
        tokio::time::sleep(MIGRATION_LOCK_POLL).await;
    }
    let result = without_sqlx_lock(migrator)
        .run_direct(&mut *connection)
        .await
        .map_err(|source| PlatformError::Migrate {
            schema: schema.to_owned(),
            source,
        });
    let unlocked =
        sqlx::query("SELECT pg_advisory_unlock(hashtext('schema-migrations'), hashtext($1))")
            .bind(schema)
            .execute(&mut *connection)
            .await;
    if unlocked.is_err() {
        // Closing the session is what releases the lock then; never pool a connection that
        // may still hold it.
        drop(connection.detach());
    }
    result
}

/// Create the schema when it is missing. Asked first rather than `CREATE SCHEMA IF NOT
/// EXISTS`: Postgres checks the right to create schemas in the database before it looks for
/// the schema, and a service's own role has no such right (docs/security.md, "Database
/// roles"): its schema is created for it, owned by it, by the roles bootstrap.
async fn ensure_schema(pool: &PgPool, schema: &str) -> Result<(), PlatformError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(pool)
            .await?;
    if exists {
        return Ok(());
    }
    let quoted = quote_identifier(schema);
    match sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))
        .execute(pool)
        .await
    {
        Ok(_) => Ok(()),
        // 42501 insufficient_privilege: say what to run instead of Postgres's bare refusal.
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42501") => {
            Err(PlatformError::SchemaMissing {
                schema: schema.to_owned(),
            })
        }
        Err(error) => Err(error.into()),
    }
}

/// How often a process waiting for another one's migration of the same schema asks again.
const MIGRATION_LOCK_POLL: Duration = Duration::from_millis(250);

/// The same migrations with sqlx's own database-wide lock turned off (see [`migrate`]).
/// `Migrator` is not `Clone`; its fields are public for `sqlx::migrate!`, and sqlx is pinned
/// to one exact version in the workspace, so building a copy from them is safe.
fn without_sqlx_lock(migrator: &Migrator) -> Migrator {
    Migrator {
        migrations: migrator.migrations.clone(),
        ignore_missing: migrator.ignore_missing,
        locking: false,
        no_tx: migrator.no_tx,
    }
}

/// One migrator of several sources' migrations (the bus's and a service's), in version order:
/// applied to one schema with one history. The first source's flags apply.
pub fn combined_migrations(sources: &[&Migrator]) -> Migrator {
    let mut migrations: Vec<sqlx::migrate::Migration> = sources
        .iter()
        .flat_map(|source| source.migrations.iter().cloned())
        .collect();
    migrations.sort_by_key(|migration| migration.version);
    let first = sources.first();
    Migrator {
        migrations: std::borrow::Cow::Owned(migrations),
        ignore_missing: first.is_some_and(|source| source.ignore_missing),
        locking: first.is_none_or(|source| source.locking),
        no_tx: first.is_some_and(|source| source.no_tx),
    }
}

/// Quote an SQL identifier (schema and database names come from config, not from clients,
/// but quoting keeps an odd name from becoming SQL).
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `SELECT 1` on a pooled connection, with a deadline.
pub async fn ping(pool: &PgPool, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(pool)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// The readiness probe for Postgres: [`ping`]; if that fails, once more on a fresh
/// connection (not from the pool) before reporting the failure. A pooled connection can be
/// dead while Postgres is fine (after a restart, or a terminated backend): the pool drops it
/// on release, so the service is not unready for it.
pub async fn ping_with_fresh_retry(pool: &PgPool, timeout: Duration) -> Result<(), String> {
    let Err(pooled) = ping(pool, timeout).await else {
        return Ok(());
    };
    let options = pool.connect_options();
    let fresh = tokio::time::timeout(timeout, async {
        let mut connection = sqlx::PgConnection::connect_with(&options).await?;
        sqlx::query("SELECT 1").execute(&mut connection).await?;
        connection.close().await
    })
    .await;
    match fresh {
        Ok(Ok(())) => {
            tracing::info!(error = %pooled, "a pooled connection failed the readiness check; a fresh one passed");
            Ok(())
        }
        Ok(Err(error)) => Err(format!("{pooled}; on a fresh connection: {error}")),
        Err(_) => Err(format!(
            "{pooled}; a fresh connection did not answer within {} ms",
            timeout.as_millis()
        )),
    }
}
