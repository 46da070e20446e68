//! Creating an entry in one statement: the row, its facts (in the author's timezone) and its
//! changeset and event, shared by `journalEntries.create` and `POST /api/v1/journal-entries`.

use chrono::Utc;
use domain::ids::{JournalEntryId, UserId};
use messages::journal::v1::JournalEntryCreated;

use super::store::Written;
use super::types::{CreateInput, JournalEntry};
use crate::http::error::ApiError;
use crate::modules::teams::store::MY_TEAMS_SQL;
use domain::time::DateInput;
use sync_protocol::changes::Op;
use sync_protocol::synced_tx::{SyncedRecorder, SyncedWrites};

/// Whether an entry of `user_id` in `team_id` (`None`: personal) may answer the live prompt
/// bound as `prompt`: a team entry only its team's prompts (every member must be able to
/// resolve it), a personal entry the caller's own prompts or any of their teams'. An SQL
/// condition on the binds `$1` (user), `$2` (team) and `prompt` (e.g. `$3`).
fn prompt_usable_sql(prompt: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM prompts
                  WHERE prompt_id = {prompt} AND deleted_at IS NULL
                    AND CASE WHEN $2::uuid IS NULL
                             THEN owner_user_id = $1 OR team_id IN ({MY_TEAMS_SQL})
                             ELSE team_id = $2 END)"
    )
}

/// The authors' timezones as the last create saw them: the guess a create's event is built
/// with (its facts need the local date and hour). Only a guess: the create's statement
/// writes nothing unless the timezone in `users` is still the one guessed, and answers the
/// current one, so a stale or missing entry costs one more statement, never a wrong event.
/// Shared by every api instance of the process (tests run several), which is harmless for
/// the same reason.
static AUTHOR_TIMEZONES: std::sync::LazyLock<moka::future::Cache<UserId, Option<String>>> =
    std::sync::LazyLock::new(|| {
        moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_idle(std::time::Duration::from_secs(600))
            .build()
    });

/// What a user's timezone is until they set one (`users.timezone`'s default).
const DEFAULT_TIMEZONE: &str = "UTC";

/// How many times a create is tried when the author's timezone changes under it.
const CREATE_ATTEMPTS: usize = 3;

/// What the create statement answers.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct CreateOutcome {
    pub(crate) team_ok: bool,
    pub(crate) prompt_ok: bool,
    pub(crate) author_timezone: Option<String>,
    pub(crate) created: bool,
}

/// Create an entry of `author_user_id` (checked input): the row, its changeset and its
/// `journal_entry.created` event. Shared by the RPC procedure and the open API's
/// `POST /api/v1/journal-entries` (author = the key's creator).
///
/// One autocommit statement (one round trip, one commit): the id (UUIDv7) and the timestamps
/// are made here, so the row, its event and its changeset exist before the write, and one
/// `WITH` writes the row and the outbox rows, only if the team and prompt checks pass. A
/// refused create writes nothing and answers `404 Team` / `404 Prompt` as before.
/// `created_at` = `updated_at` = this api's clock (to the microsecond Postgres keeps), not
/// Postgres' `now()`: the changeset carries the row as stored, so the value must be known
/// before the statement.
pub async fn create_entry(
    db: &sqlx::PgPool,
    author_user_id: UserId,
    entry: CreateInput,
) -> Result<JournalEntry, ApiError> {
    use chrono::SubsecRound;
    use sqlx::Arguments;
    use sqlx::postgres::PgArguments;

    let now = Utc::now().trunc_subsecs(6);
    let created = JournalEntry {
        journal_entry_id: JournalEntryId::generate(),
        author_user_id,
        team_id: entry.team_id,
        prompt_id: entry.prompt_id,
        title: entry.title.trim().to_owned(),
        entry_date: entry.entry_date.as_ref().and_then(DateInput::date),
        content: entry.content,
        mood: entry.mood,
        tags: entry.tags.unwrap_or_default(),
        created_at: now.into(),
        updated_at: now.into(),
        deleted_at: None,
        version: 1,
    };
    let author_timezone = match AUTHOR_TIMEZONES.get(&author_user_id).await {
        Some(known) => known,
        None => Some(DEFAULT_TIMEZONE.to_owned()),
    };
    let mut written = Written {
        entry: created,
        author_timezone,
    };
    for _ in 0..CREATE_ATTEMPTS {
        let outbox = created_outbox(&written)?;
        let mut arguments = PgArguments::default();
        let entry = &written.entry;
        arguments
            .add(entry.author_user_id)
            .map_err(ApiError::internal)?;
        arguments.add(entry.team_id).map_err(ApiError::internal)?;
        arguments.add(entry.prompt_id).map_err(ApiError::internal)?;
        arguments
            .add(entry.journal_entry_id)
            .map_err(ApiError::internal)?;
        arguments
            .add(entry.title.as_str())
            .map_err(ApiError::internal)?;
        arguments
            .add(entry.content.as_str())
            .map_err(ApiError::internal)?;
        arguments.add(entry.mood).map_err(ApiError::internal)?;
        arguments
            .add(entry.tags.as_slice())
            .map_err(ApiError::internal)?;
        arguments
            .add(entry.entry_date)
            .map_err(ApiError::internal)?;
        arguments
            .add(entry.created_at)
            .map_err(ApiError::internal)?;
        arguments
            .add(written.author_timezone.as_deref())
            .map_err(ApiError::internal)?;
        outbox.add_cte_binds(&mut arguments)?;
        let outcome: CreateOutcome = sqlx::query_as_with(CREATE_SQL.as_str(), arguments)
            .fetch_one(db)
            .await?;
        if !outcome.team_ok {
            return Err(ApiError::not_found("Team"));
        }
        if !outcome.prompt_ok {
            return Err(ApiError::not_found("Prompt"));
        }
        AUTHOR_TIMEZONES
            .insert(author_user_id, outcome.author_timezone.clone())
            .await;
        if outcome.created {
            return Ok(written.entry);
        }
        // The timezone was not the one guessed: nothing was written; again with the current.
        written.author_timezone = outcome.author_timezone;
    }
    Err(ApiError::internal(
        "journal entry create: the author's timezone kept changing",
    ))
}

static CREATE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(create_sql);

/// The create's statement: binds `$1` author, `$2` team, `$3` prompt, `$4` id, `$5` title,
/// `$6` content, `$7` mood, `$8` tags, `$9` entry date, `$10` created/updated at, `$11` the
/// author's timezone the event was built with, then the outbox batch's binds.
fn create_sql() -> String {
    let prompt_usable = prompt_usable_sql("$3");
    let outbox = bus::outbox::OutboxBatch::cte_sql(12, Some("EXISTS (SELECT 1 FROM entry)"));
    format!(
        "WITH checks AS (
             SELECT ($2::uuid IS NULL OR EXISTS (
                        SELECT 1 FROM team_members m JOIN teams t ON t.team_id = m.team_id
                         WHERE m.team_id = $2 AND m.user_id = $1 AND m.deleted_at IS NULL
                           AND t.deleted_at IS NULL)) AS team_ok,
                    ($3::uuid IS NULL OR {prompt_usable}) AS prompt_ok,
                    (SELECT timezone FROM users WHERE user_id = $1) AS author_timezone
         ),
         entry AS (
             INSERT INTO journal_entries
                    (journal_entry_id, author_user_id, team_id, prompt_id, title, content, mood,
                     tags, entry_date, created_at, updated_at)
             SELECT $4, $1, $2, $3, $5, $6, $7, $8, $9, $10, $10
               FROM checks
              WHERE team_ok AND prompt_ok AND author_timezone IS NOT DISTINCT FROM $11::text
             RETURNING 1
         ),
         outbox_rows AS ({outbox})
         SELECT team_ok, prompt_ok, author_timezone, EXISTS (SELECT 1 FROM entry) AS created,
                (SELECT count(*) FROM outbox_rows) AS outbox_written
           FROM checks"
    )
}

/// The outbox rows of a created entry: its `journal_entry.created` event (ordered by the
/// entry id) and its changeset, in that order.
fn created_outbox(written: &Written) -> Result<bus::outbox::OutboxBatch, ApiError> {
    let created = &written.entry;
    let event = JournalEntryCreated {
        journal_entry_id: created.journal_entry_id.to_string(),
        author_user_id: created.author_user_id.to_string(),
        team_id: created.team_id_text(),
        created_at_ms: created.created_at.millis(),
        version: created.version,
        facts: Some(written.facts()),
    };
    let mut writes = SyncedWrites::default();
    writes.emit_ordered(&event, &created.journal_entry_id.to_string());
    writes.record(&[created.scope()], Op::Insert, created)?;
    Ok(writes.into_outbox())
}

// ---------------------------------------------------------------------------------------------
// get
