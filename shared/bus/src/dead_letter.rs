//! Dead letters: messages whose handler failed for the last time, kept in the service's own
//! schema with the handler, attempts, last error and payload.
//!
//! Re-driving is a request recorded on the row (`redrive_requested_at`); the running service
//! picks it up (NOTIFY wakes it, a poll backs that up), runs the handler on the stored
//! payload, and marks the row re-driven — or records the new error. Re-driving through the
//! database rather than re-publishing means an event is re-run only by the handler that
//! failed, not fanned out to every subscriber again.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use sqlx::types::Json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::pipeline::{Acker, Delivery, Outcome, Pipeline};
use crate::router::Meta;

/// A message to keep.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub handler: String,
    pub subject: String,
    pub message_id: String,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    pub attempts: i32,
    pub last_error: String,
}

/// A stored dead letter, as the operator command lists it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct StoredDeadLetter {
    pub dead_letter_id: Uuid,
    pub handler: String,
    pub subject: String,
    pub message_id: String,
    pub attempts: i32,
    pub last_error: String,
    pub dead_at: chrono::DateTime<chrono::Utc>,
    pub redrive_requested_at: Option<chrono::DateTime<chrono::Utc>>,
    pub redriven_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Clone)]
pub struct DeadLetterStore {
    pool: PgPool,
}

impl DeadLetterStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Keep `letter`. The same message dead again (after a failed re-drive) updates its row.
    pub async fn store(&self, letter: &DeadLetter) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO dead_letters (handler, subject, message_id, payload, headers, attempts, last_error)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (handler, message_id) DO UPDATE
               SET attempts = dead_letters.attempts + EXCLUDED.attempts,
                   last_error = EXCLUDED.last_error,
                   dead_at = now(),
                   redrive_requested_at = NULL,
                   redriven_at = NULL",
        )
        .bind(&letter.handler)
        .bind(&letter.subject)
        .bind(&letter.message_id)
        .bind(&letter.payload)
        .bind(Json(&letter.headers))
        .bind(letter.attempts)
        .bind(&letter.last_error)
        .execute(&self.pool)
        .await?;
        metrics::counter!("bus_dead_letters_total", "handler" => letter.handler.clone())
            .increment(1);
        Ok(())
    }

    /// Dead letters not yet re-driven successfully, newest first.
    pub async fn list(&self, include_redriven: bool) -> Result<Vec<StoredDeadLetter>, sqlx::Error> {
        sqlx::query_as(
            "SELECT dead_letter_id, handler, subject, message_id, attempts, last_error, dead_at,
                    redrive_requested_at, redriven_at
               FROM dead_letters
              WHERE $1 OR redriven_at IS NULL
              ORDER BY dead_at DESC",
        )
        .bind(include_redriven)
        .fetch_all(&self.pool)
        .await
    }

    /// Ask the running service to re-drive one dead letter (or all, with `None`). Returns how
    /// many were marked.
    pub async fn request_redrive(&self, dead_letter_id: Option<Uuid>) -> Result<u64, sqlx::Error> {
        let marked = sqlx::query(
            "UPDATE dead_letters SET redrive_requested_at = now()
              WHERE redriven_at IS NULL AND ($1::uuid IS NULL OR dead_letter_id = $1)",
        )
        .bind(dead_letter_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        sqlx::query("SELECT pg_notify(current_schema() || '_redrive', '')")
            .execute(&self.pool)
            .await?;
        Ok(marked)
    }
}

#[derive(sqlx::FromRow)]
struct RedriveRow {
    dead_letter_id: Uuid,
    handler: String,
    subject: String,
    message_id: String,
    payload: Vec<u8>,
    headers: Json<BTreeMap<String, String>>,
}

/// Serve re-drive requests for the handlers registered in this process.
pub(crate) async fn serve_redrives(
    pool: PgPool,
    handlers: Vec<(String, Pipeline)>,
    shutdown: CancellationToken,
) {
    if handlers.is_empty() {
        return;
    }
    let names: Vec<String> = handlers.iter().map(|(name, _)| name.clone()).collect();
    let mut listener: Option<PgListener> = None;
    while !shutdown.is_cancelled() {
        if listener.is_none() {
            listener = listen(&pool).await;
        }
        loop {
            match redrive_one(&pool, &handlers, &names).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(error) => {
                    tracing::warn!(%error, "re-driving dead letters failed");
                    break;
                }
            }
        }
        let wait = async {
            match listener.as_mut() {
                Some(active) => matches!(
                    tokio::time::timeout(Duration::from_secs(5), active.recv()).await,
                    Ok(Ok(_)) | Err(_)
                ),
                None => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    true
                }
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            healthy = wait => if !healthy { listener = None; },
        }
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(pool)
        .await
        .ok()?;
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(&format!("{schema}_redrive")).await.ok()?;
    Some(listener)
}

/// Claim one requested re-drive for our handlers, run it, record the outcome.
async fn redrive_one(
    pool: &PgPool,
    handlers: &[(String, Pipeline)],
    names: &[String],
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<RedriveRow> = sqlx::query_as(
        "SELECT dead_letter_id, handler, subject, message_id, payload, headers
           FROM dead_letters
          WHERE redrive_requested_at IS NOT NULL AND redriven_at IS NULL AND handler = ANY($1)
          ORDER BY dead_at
          LIMIT 1
          FOR UPDATE SKIP LOCKED",
    )
    .bind(names)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(false) };
    let Some((_, pipeline)) = handlers.iter().find(|(name, _)| *name == row.handler) else {
        return Ok(false);
    };
    let delivery = Delivery {
        meta: Meta {
            message_id: row.message_id.clone(),
            subject: row.subject.clone(),
            attempt: 1,
            stream_sequence: None,
            emitted_at_micros: None,
            handler: row.handler.clone(),
        },
        payload: row.payload.into(),
        headers: row.headers.0.into_iter().collect(),
        acker: Acker::Redrive,
    };
    let outcome = pipeline.process(delivery).await;
    match outcome {
        Outcome::Acked => {
            sqlx::query("UPDATE dead_letters SET redriven_at = now() WHERE dead_letter_id = $1")
                .bind(row.dead_letter_id)
                .execute(&mut *tx)
                .await?;
            tracing::info!(dead_letter_id = %row.dead_letter_id, handler = %row.handler, "dead letter re-driven");
        }
        other => {
            let error = match other {
                Outcome::RedriveFailed(error) => error,
                _ => "re-drive did not complete".to_owned(),
            };
            sqlx::query(
                "UPDATE dead_letters
                    SET redrive_requested_at = NULL, attempts = attempts + 1, last_error = $2, dead_at = now()
                  WHERE dead_letter_id = $1",
            )
            .bind(row.dead_letter_id)
            .bind(&error)
            .execute(&mut *tx)
            .await?;
            tracing::warn!(dead_letter_id = %row.dead_letter_id, %error, "re-drive failed; still dead");
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// The operator command every binary offers:
/// `<binary> dead-letters list [--all] [--json]`, `<binary> dead-letters redrive <id>|--all`.
/// Returns `None` when the arguments are not a dead-letters command (start the service).
pub async fn admin_command(
    args: &[String],
    database_url: &secrecy::SecretString,
    database_password: Option<&secrecy::SecretString>,
    schema: &str,
) -> Option<std::process::ExitCode> {
    use std::process::ExitCode;
    if args.first().map(String::as_str) != Some("dead-letters") {
        return None;
    }
    let usage = "usage: dead-letters list [--all] [--json] | dead-letters redrive <dead_letter_id> | dead-letters redrive --all";
    let pool = match platform::db::connect_with_password(database_url, database_password, schema, 2)
        .await
    {
        Ok(pool) => pool,
        Err(error) => {
            eprintln!("cannot connect to the database: {error}");
            return Some(ExitCode::from(1));
        }
    };
    let store = DeadLetterStore::new(pool);
    let flags: Vec<&str> = args.iter().skip(2).map(String::as_str).collect();
    let code = match args.get(1).map(String::as_str) {
        Some("list") => match store.list(flags.contains(&"--all")).await {
            Ok(letters) if flags.contains(&"--json") => {
                for letter in letters {
                    println!("{}", serde_json::to_string(&letter).unwrap_or_default());
                }
                ExitCode::SUCCESS
            }
            Ok(letters) => {
                println!(
                    "{:<36}  {:<32}  {:>8}  {:<20}  last error",
                    "dead_letter_id", "handler", "attempts", "dead at"
                );
                for letter in &letters {
                    let state = match (letter.redriven_at, letter.redrive_requested_at) {
                        (Some(_), _) => " [re-driven]",
                        (None, Some(_)) => " [re-drive requested]",
                        _ => "",
                    };
                    println!(
                        "{:<36}  {:<32}  {:>8}  {:<20}  {}{state}",
                        letter.dead_letter_id,
                        letter.handler,
                        letter.attempts,
                        letter.dead_at.format("%Y-%m-%d %H:%M:%S"),
                        letter.last_error
                    );
                }
                println!("{} dead letter(s)", letters.len());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("listing dead letters failed: {error}");
                ExitCode::from(1)
            }
        },
        Some("redrive") => {
            let target = match flags.first() {
                Some(&"--all") => Ok(None),
                Some(id) => id
                    .parse::<Uuid>()
                    .map(Some)
                    .map_err(|_| format!("`{id}` is not a dead_letter_id")),
                None => Err(usage.to_owned()),
            };
            match target {
                Err(message) => {
                    eprintln!("{message}");
                    ExitCode::from(2)
                }
                Ok(target) => match store.request_redrive(target).await {
                    Ok(0) => {
                        eprintln!("no matching dead letter awaiting re-drive");
                        ExitCode::from(1)
                    }
                    Ok(count) => {
                        println!(
                            "re-drive requested for {count} dead letter(s); the running service handles them"
                        );
                        ExitCode::SUCCESS
                    }
                    Err(error) => {
                        eprintln!("requesting re-drive failed: {error}");
                        ExitCode::from(1)
                    }
                },
            }
        }
        _ => {
            eprintln!("{usage}");
            ExitCode::from(2)
        }
    };
    Some(code)
}

/// For `main`: when the process was started as `<binary> dead-letters ...`, run the operator
/// command against `schema` (reading `DATABASE_URL`) and return its exit code.
pub async fn admin_main(schema: &str) -> Option<std::process::ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("dead-letters") {
        return None;
    }
    let mut env = platform::config::EnvReader::from_process();
    let common = platform::config::CommonConfig::read(&mut env);
    if let Err(error) = env.finish() {
        eprintln!("{error}");
        return Some(std::process::ExitCode::from(2));
    }
    admin_command(
        &args,
        &common.database_url,
        common.database_password.as_ref(),
        schema,
    )
    .await
}
