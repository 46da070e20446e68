//! Journal entries: `journalEntries.create|get|list|update|delete|restore`.
//!
//! Every write changes the row, records its changeset (personal entry → the author's scope,
//! team entry → the team's scope) and emits its `journal_entry.*` event in one transaction, so
//! the changeset and the event exist exactly when the change does.
//!
//! Who may do what (checked here, never trusted from the client):
//! - see (`get`, `list`): a personal entry its author; a team entry every active member of the
//!   team. Anything else answers `NOT_FOUND`, the same as an id that does not exist.
//! - change (`update`, `delete`, `restore`): the author; for a team entry also the team's
//!   admins and owners. Someone who can see the entry but not change it gets `FORBIDDEN`.
//! - deleting an entry soft-deletes its attachments in the same transaction; restoring it
//!   restores the ones deleted with it (see `attachments`).
//! - a deleted entry cannot be updated (`409 ENTRY_DELETED`: restore it first); deleting a
//!   deleted entry, or restoring a live one, answers the entry unchanged (no event, no
//!   changeset).
//! - `teamId` on `create`/`list` that is not a team of the caller, and a `promptId` the caller
//!   cannot see (or that is deleted), answer `NOT_FOUND` ("Team not found" / "Prompt not
//!   found"), so ids cannot be probed.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Timelike, Utc};
use chrono_tz::Tz;
use messages::journal::v1::{
    JournalEntryCreated, JournalEntryDeleted, JournalEntryFacts, JournalEntryRestored,
    JournalEntryUpdated,
};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::AppState;
use crate::changes::{Changes, Op, Scope, SyncedRow};
use crate::contract::{Text, errors, format};
use crate::error::{ApiError, ErrorData};
use crate::pagination::{KeysetCursor, finish_page};
use crate::rpc::{Input, Rpc, RpcInput, RpcQuery, RpcRouter};
use crate::session::Protected;
use crate::teams::{MY_TEAMS_SQL, Role, member_role};
use crate::validation::{EpochMillis, Issues, item, parse_date};

pub fn routes() -> RpcRouter {
    RpcRouter::new()
        .mutation("journalEntries.create", create)
        .query("journalEntries.get", get)
        .query("journalEntries.list", list)
        .mutation("journalEntries.update", update)
        .errors(&[errors::EDIT_CONFLICT, errors::ENTRY_DELETED])
        .mutation("journalEntries.delete", delete)
        .mutation("journalEntries.restore", restore)
}

/// An entry's limits: the checks ([`Input::check`]) and the contract's schemas both use them.
pub const TITLE_MAX_CHARS: usize = 200;
pub const CONTENT_MAX_CHARS: usize = 100_000;
pub const MOOD_MIN: i16 = 1;
pub const MOOD_MAX: i16 = 5;
pub const MAX_TAGS: usize = 50;
pub const TAG_MAX_CHARS: usize = 50;
/// `journalEntries.list`: the largest page, and the longest `q` or `tag`.
pub const LIST_LIMIT_MAX: i64 = 100;
pub const SEARCH_MAX_CHARS: usize = 200;

pub(crate) const COLUMNS: &str = "journal_entry_id, author_user_id, team_id, prompt_id, title, content, \
                       mood, tags, entry_date, created_at, updated_at, deleted_at, version";

/// What a write returns: the entry and, for its event's facts, its author's timezone (read in
/// the same statement, so a write costs no extra round trip).
const WRITTEN_COLUMNS: &str = "journal_entry_id, author_user_id, team_id, prompt_id, title, \
     content, mood, tags, entry_date, created_at, updated_at, deleted_at, version, \
     (SELECT timezone FROM users WHERE users.user_id = journal_entries.author_user_id) \
     AS author_timezone";

/// An entry as a write left it.
#[derive(Debug, sqlx::FromRow)]
struct Written {
    #[sqlx(flatten)]
    entry: JournalEntry,
    author_timezone: Option<String>,
}

impl Written {
    /// What the worker's insights need to know (`journal_entry.*` events carry it).
    fn facts(&self) -> JournalEntryFacts {
        let entry = &self.entry;
        let zone: Tz = self
            .author_timezone
            .as_deref()
            .and_then(|zone| zone.parse().ok())
            .unwrap_or(Tz::UTC);
        let created_local = entry.created_at.with_timezone(&zone);
        JournalEntryFacts {
            word_count: i32::try_from(entry.content.split_whitespace().count()).unwrap_or(i32::MAX),
            entry_date: entry
                .entry_date
                .map(|date| date.format("%Y-%m-%d").to_string()),
            created_local_date: created_local.date_naive().format("%Y-%m-%d").to_string(),
            created_local_hour: created_local.hour() as i32,
            created_at_ms: entry.created_at.timestamp_millis(),
        }
    }
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    pub journal_entry_id: Uuid,
    pub author_user_id: Uuid,
    pub team_id: Option<Uuid>,
    pub prompt_id: Option<Uuid>,
    pub title: String,
    pub content: String,
    pub mood: Option<i16>,
    pub tags: Vec<String>,
    #[schema(value_type = Option<String>, format = Date)]
    pub entry_date: Option<NaiveDate>,
    /// Epoch milliseconds.
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    #[schema(value_type = i64)]
    pub created_at: DateTime<Utc>,
    /// Epoch milliseconds.
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    #[schema(value_type = i64)]
    pub updated_at: DateTime<Utc>,
    /// Epoch milliseconds; set on a deleted entry.
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    #[schemars(with = "Option<i64>")]
    #[schema(value_type = Option<i64>)]
    pub deleted_at: Option<DateTime<Utc>>,
    pub version: i64,
}

impl SyncedRow for JournalEntry {
    const TABLE: &'static str = "journal_entries";
    fn row_id(&self) -> String {
        self.journal_entry_id.to_string()
    }
    fn version(&self) -> i64 {
        self.version
    }
}

impl JournalEntry {
    pub(crate) fn scope(&self) -> Scope {
        Scope::owner(self.author_user_id, self.team_id)
    }

    fn team_id_text(&self) -> String {
        self.team_id.map(|id| id.to_string()).unwrap_or_default()
    }
}

fn check_mood(issues: &mut Issues, mood: i16) {
    issues.number_range("mood", i64::from(mood), MOOD_MIN.into(), MOOD_MAX.into());
}

/// The document's `tags`: what [`check_tags`] enforces (utoipa has no attribute for the
/// items' length).
fn tags_schema() -> utoipa::openapi::schema::Array {
    tags_schema_builder().build()
}

/// [`tags_schema`] where `null` means none (create).
fn nullable_tags_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{SchemaType, Type};
    tags_schema_builder()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .build()
}

fn tags_schema_builder() -> utoipa::openapi::schema::ArrayBuilder {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(50))
                // No NUL (the server refuses it in every string: Postgres text cannot hold it).
                .pattern(Some(r"^[^\u0000]*$")),
        )
        .max_items(Some(50))
        .description(Some("Up to 50 tags of 1–50 characters."))
}

fn check_tags(issues: &mut Issues, tags: &[String]) {
    issues.array_length("tags", tags.len(), MAX_TAGS);
    for (index, tag) in tags.iter().enumerate() {
        issues.string_length(item("tags", index), tag, 1, TAG_MAX_CHARS);
    }
}

/// A date already checked by [`parse_date`] in `check`.
fn to_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

// ---------------------------------------------------------------------------------------------
// create

/// `journalEntries.create` input (ARCHITECTURE §9).
#[derive(Debug, Deserialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(
    as = CreateJournalEntryInput,
    description = "A new journal entry (in the open API, a team entry of the key's team)."
)]
pub struct CreateInput {
    /// 1–200 characters, not blank (stored trimmed).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000]*[^\u0000\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000]*$"
    )]
    #[schemars(length(max = TITLE_MAX_CHARS), transform = Text::trimmed().min(1))]
    pub title: String,
    /// Up to 100,000 characters.
    #[schema(max_length = 100_000, pattern = r"^[^\u0000]*$")]
    #[schemars(length(max = CONTENT_MAX_CHARS))]
    pub content: String,
    /// 1–5.
    #[schema(minimum = 1, maximum = 5)]
    #[schemars(range(min = MOOD_MIN, max = MOOD_MAX))]
    pub mood: Option<i16>,
    /// Up to 50 tags of 1–50 characters.
    #[schema(schema_with = nullable_tags_schema, required = false)]
    #[schemars(length(max = MAX_TAGS), inner(length(min = 1, max = TAG_MAX_CHARS)))]
    pub tags: Option<Vec<String>>,
    /// `YYYY-MM-DD`.
    #[schema(format = Date)]
    #[schemars(transform = format("date"))]
    pub entry_date: Option<String>,
    /// Set by the server in the open API (the key's team).
    #[schema(ignore)]
    pub team_id: Option<Uuid>,
    pub prompt_id: Option<Uuid>,
}

impl Input for CreateInput {
    fn check(&self, issues: &mut Issues) {
        issues.trimmed_string_length("title", &self.title, 1, TITLE_MAX_CHARS);
        issues.string_length("content", &self.content, 0, CONTENT_MAX_CHARS);
        if let Some(mood) = self.mood {
            check_mood(issues, mood);
        }
        if let Some(tags) = &self.tags {
            check_tags(issues, tags);
        }
        if let Some(date) = &self.entry_date {
            parse_date(issues, "entryDate", date);
        }
        // Teams and prompts are checked against the database by the procedure.
    }
}

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

/// `journalEntries.create`.
pub async fn create(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(entry): RpcInput<CreateInput>,
) -> Result<Rpc<JournalEntry>, ApiError> {
    create_entry(&state.db, session.user_id, entry)
        .await
        .map(Rpc)
}

/// The authors' timezones as the last create saw them: the guess a create's event is built
/// with (its facts need the local date and hour). Only a guess: the create's statement
/// writes nothing unless the timezone in `users` is still the one guessed, and answers the
/// current one, so a stale or missing entry costs one more statement, never a wrong event.
/// Shared by every api instance of the process (tests run several), which is harmless for
/// the same reason.
static AUTHOR_TIMEZONES: std::sync::LazyLock<moka::future::Cache<Uuid, Option<String>>> =
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
struct CreateOutcome {
    team_ok: bool,
    prompt_ok: bool,
    author_timezone: Option<String>,
    created: bool,
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
    author_user_id: Uuid,
    entry: CreateInput,
) -> Result<JournalEntry, ApiError> {
    use chrono::SubsecRound;
    use sqlx::Arguments;
    use sqlx::postgres::PgArguments;

    let now = Utc::now().trunc_subsecs(6);
    let created = JournalEntry {
        journal_entry_id: Uuid::now_v7(),
        author_user_id,
        team_id: entry.team_id,
        prompt_id: entry.prompt_id,
        title: entry.title.trim().to_owned(),
        entry_date: entry.entry_date.as_deref().and_then(to_date),
        content: entry.content,
        mood: entry.mood,
        tags: entry.tags.unwrap_or_default(),
        created_at: now,
        updated_at: now,
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
        outbox.add_binds(&mut arguments)?;
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
    let outbox = bus::outbox::OutboxBatch::insert_sql(12, Some("EXISTS (SELECT 1 FROM entry)"));
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
         SELECT team_ok, prompt_ok, author_timezone, EXISTS (SELECT 1 FROM entry) AS created
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
        created_at_ms: created.created_at.timestamp_millis(),
        version: created.version,
        facts: Some(written.facts()),
    };
    let mut outbox = bus::outbox::OutboxBatch::new();
    outbox.push_ordered(&event, &created.journal_entry_id.to_string());
    let mut changes = Changes::new();
    changes.record(&[created.scope()], Op::Insert, created)?;
    changes.push_to(&mut outbox);
    Ok(outbox)
}

// ---------------------------------------------------------------------------------------------
// get

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetInput {
    pub journal_entry_id: Uuid,
}

impl Input for GetInput {}

/// An entry the caller can see, with their role in its team (for team entries). With
/// `for_update` the row is locked for the rest of the transaction.
async fn load_visible(
    conn: &mut PgConnection,
    journal_entry_id: Uuid,
    user_id: Uuid,
    for_update: bool,
) -> Result<(JournalEntry, Option<Role>), ApiError> {
    let entry: Option<JournalEntry> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM journal_entries WHERE journal_entry_id = $1{}",
        if for_update { " FOR UPDATE" } else { "" }
    ))
    .bind(journal_entry_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(entry) = entry else {
        return Err(ApiError::not_found("Journal entry"));
    };
    match entry.team_id {
        None if entry.author_user_id == user_id => Ok((entry, None)),
        None => Err(ApiError::not_found("Journal entry")),
        Some(team_id) => match member_role(conn, team_id, user_id).await? {
            Some(role) => Ok((entry, Some(role))),
            None => Err(ApiError::not_found("Journal entry")),
        },
    }
}

/// A live entry of `team_id` (the open API's scope: an API key acts for its whole team).
/// Anything else, a deleted entry included, answers `NOT_FOUND`.
pub async fn load_in_team(
    conn: &mut PgConnection,
    journal_entry_id: Uuid,
    team_id: Uuid,
    for_update: bool,
) -> Result<JournalEntry, ApiError> {
    let entry: Option<JournalEntry> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM journal_entries
          WHERE journal_entry_id = $1 AND team_id = $2 AND deleted_at IS NULL{}",
        if for_update { " FOR UPDATE" } else { "" }
    ))
    .bind(journal_entry_id)
    .bind(team_id)
    .fetch_optional(conn)
    .await?;
    entry.ok_or_else(|| ApiError::not_found("Journal entry"))
}

/// A visible entry the caller may change (author, or admin/owner of its team), locked.
pub(crate) async fn load_changeable(
    conn: &mut PgConnection,
    journal_entry_id: Uuid,
    user_id: Uuid,
) -> Result<JournalEntry, ApiError> {
    let (entry, role) = load_visible(conn, journal_entry_id, user_id, true).await?;
    let may_change =
        entry.author_user_id == user_id || role.is_some_and(|role| role >= Role::Admin);
    if !may_change {
        return Err(ApiError::forbidden(
            "Only the author or a team admin can change this journal entry",
        ));
    }
    Ok(entry)
}

/// `journalEntries.get {journalEntryId}` (GET-able): also a deleted entry, with `deletedAt`.
pub async fn get(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<GetInput>,
) -> Result<Rpc<JournalEntry>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let (entry, _) =
        load_visible(&mut conn, input.journal_entry_id, session.user_id, false).await?;
    Ok(Rpc(entry))
}

// ---------------------------------------------------------------------------------------------
// list

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListScope {
    Personal,
    Team,
    #[default]
    All,
}

/// `journalEntries.list` input. `createdAfter`/`createdBefore` are exclusive bounds (epoch
/// ms); `entryDateFrom`/`entryDateTo` inclusive.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListInput {
    #[schemars(range(min = 1, max = LIST_LIMIT_MAX))]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub team_id: Option<Uuid>,
    pub scope: Option<ListScope>,
    #[schemars(length(min = 1, max = TAG_MAX_CHARS))]
    pub tag: Option<String>,
    #[schemars(transform = format("date"))]
    pub entry_date_from: Option<String>,
    #[schemars(transform = format("date"))]
    pub entry_date_to: Option<String>,
    pub created_after: Option<EpochMillis>,
    pub created_before: Option<EpochMillis>,
    #[schemars(length(min = 1, max = SEARCH_MAX_CHARS))]
    pub q: Option<String>,
    pub deleted: Option<bool>,
}

/// `list` may be called without input.
impl Input for Option<ListInput> {
    fn check(&self, issues: &mut Issues) {
        if let Some(input) = self {
            input.check_fields(issues);
        }
    }
}

impl ListInput {
    /// The checks of a present input (the open API builds its input from query parameters).
    pub fn check_fields(&self, issues: &mut Issues) {
        let input = self;
        if let Some(limit) = input.limit {
            issues.number_range("limit", limit, 1, LIST_LIMIT_MAX);
        }
        if let Some(cursor) = &input.cursor
            && KeysetCursor::decode(cursor).is_none()
        {
            issues.format("cursor", "cursor", "Invalid cursor");
        }
        if input.team_id.is_some() && input.scope == Some(ListScope::Personal) {
            issues.custom(
                "teamId",
                "teamId lists a team's entries; not with scope personal",
            );
        }
        if let Some(tag) = &input.tag {
            issues.string_length("tag", tag, 1, TAG_MAX_CHARS);
        }
        let from = input
            .entry_date_from
            .as_deref()
            .and_then(|date| parse_date(issues, "entryDateFrom", date));
        let to = input
            .entry_date_to
            .as_deref()
            .and_then(|date| parse_date(issues, "entryDateTo", date));
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            issues.custom("entryDateTo", "entryDateTo is before entryDateFrom");
        }
        if let Some(q) = &input.q {
            issues.string_length("q", q, 1, SEARCH_MAX_CHARS);
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = JournalEntryPage)]
#[schemars(rename = "JournalEntryPage")]
pub struct Page {
    pub items: Vec<JournalEntry>,
    pub next_cursor: Option<String>,
}

/// `journalEntries.list` (GET-able): newest first by `(created_at, journal_entry_id)`, keyset
/// pages (rows created after page 1 was read never shift later pages).
pub async fn list(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<Option<ListInput>>,
) -> Result<Rpc<Page>, ApiError> {
    let input = input.unwrap_or_default();
    let mut conn = state.db.acquire().await?;
    if let Some(team_id) = input.team_id
        && member_role(&mut conn, team_id, session.user_id)
            .await?
            .is_none()
    {
        return Err(ApiError::not_found("Team"));
    }
    list_page(&mut conn, session.user_id, &input).await.map(Rpc)
}

/// One page of the entries `user_id` sees, filtered by `input` (checked). With `teamId` the
/// team's entries, whose membership the caller has checked (or, in the open API, that the
/// key belongs to).
pub async fn list_page(
    conn: &mut PgConnection,
    user_id: Uuid,
    input: &ListInput,
) -> Result<Page, ApiError> {
    let limit = input.limit.unwrap_or(20);
    let mut query =
        QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM journal_entries WHERE "));
    let personal = |query: &mut QueryBuilder<Postgres>| {
        query.push("(team_id IS NULL AND author_user_id = ");
        query.push_bind(user_id);
        query.push(")");
    };
    let my_teams = |query: &mut QueryBuilder<Postgres>| {
        query.push("team_id IN (SELECT m.team_id FROM team_members m JOIN teams t ON t.team_id = m.team_id WHERE m.user_id = ");
        query.push_bind(user_id);
        query.push(" AND m.deleted_at IS NULL AND t.deleted_at IS NULL)");
    };
    match (input.team_id, input.scope.unwrap_or_default()) {
        // Membership was checked above.
        (Some(team_id), _) => {
            query.push("team_id = ");
            query.push_bind(team_id);
        }
        (None, ListScope::Personal) => personal(&mut query),
        (None, ListScope::Team) => my_teams(&mut query),
        (None, ListScope::All) => {
            query.push("(");
            personal(&mut query);
            query.push(" OR ");
            my_teams(&mut query);
            query.push(")");
        }
    }
    query.push(if input.deleted.unwrap_or(false) {
        " AND deleted_at IS NOT NULL"
    } else {
        " AND deleted_at IS NULL"
    });
    if let Some(tag) = &input.tag {
        query.push(" AND tags @> ARRAY[");
        query.push_bind(tag.clone());
        query.push("]::text[]");
    }
    if let Some(from) = input.entry_date_from.as_deref().and_then(to_date) {
        query.push(" AND entry_date >= ");
        query.push_bind(from);
    }
    if let Some(to) = input.entry_date_to.as_deref().and_then(to_date) {
        query.push(" AND entry_date <= ");
        query.push_bind(to);
    }
    if let Some(after) = input.created_after.map(EpochMillis::at) {
        // Timestamps go out in milliseconds but are stored in microseconds: "after an
        // entry's createdAt" must not return that entry, so compare at millisecond precision
        // (as `>= after + 1 ms`, which keeps the index usable).
        query.push(" AND created_at >= ");
        query.push_bind(after + chrono::TimeDelta::milliseconds(1));
    }
    if let Some(before) = input.created_before.map(EpochMillis::at) {
        query.push(" AND created_at < ");
        query.push_bind(before);
    }
    if let Some(q) = &input.q {
        // The exact expression of journal_entries_search_idx, so the index is used.
        query.push(
            " AND to_tsvector('simple'::regconfig, title || ' ' || content) \
             @@ websearch_to_tsquery('simple', ",
        );
        query.push_bind(q.clone());
        query.push(")");
    }
    if let Some(cursor) = input.cursor.as_deref().and_then(KeysetCursor::decode) {
        query.push(" AND (created_at, journal_entry_id) < (");
        query.push_bind(cursor.created_at);
        query.push(", ");
        query.push_bind(cursor.id);
        query.push(")");
    }
    query.push(" ORDER BY created_at DESC, journal_entry_id DESC LIMIT ");
    query.push_bind(limit + 1);

    let mut items: Vec<JournalEntry> = query.build_query_as().fetch_all(&mut *conn).await?;
    let next_cursor = finish_page(&mut items, limit, |last| KeysetCursor {
        created_at: last.created_at,
        id: last.journal_entry_id,
    });
    Ok(Page { items, next_cursor })
}

// ---------------------------------------------------------------------------------------------
// update

/// `journalEntries.update` input: every field optional; `mood: null` and `entryDate: null`
/// clear them.
#[derive(Debug, Deserialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(
    as = UpdateJournalEntryInput,
    description = "A partial update: absent fields stay; `mood: null` and `entryDate: null` clear them; with `expectedVersion`, a stale edit answers 409 `EDIT_CONFLICT`."
)]
pub struct UpdateInput {
    /// From the path in the open API.
    #[schema(ignore)]
    pub journal_entry_id: Uuid,
    pub expected_version: Option<i64>,
    /// 1–200 characters, not blank (stored trimmed).
    #[serde(default, deserialize_with = "crate::validation::present_not_null")]
    #[schema(
        value_type = String,
        required = false,
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000]*[^\u0000\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000]*$"
    )]
    #[schemars(with = "String", length(max = TITLE_MAX_CHARS), transform = Text::trimmed().min(1))]
    pub title: Option<String>,
    /// Up to 100,000 characters.
    #[serde(default, deserialize_with = "crate::validation::present_not_null")]
    #[schema(
        value_type = String,
        required = false,
        max_length = 100_000,
        pattern = r"^[^\u0000]*$"
    )]
    #[schemars(with = "String", length(max = CONTENT_MAX_CHARS))]
    pub content: Option<String>,
    /// 1–5; `null` clears it.
    #[serde(default, deserialize_with = "crate::validation::explicit_null")]
    #[schema(value_type = Option<i16>, minimum = 1, maximum = 5)]
    #[schemars(range(min = MOOD_MIN, max = MOOD_MAX))]
    pub mood: Option<Option<i16>>,
    /// Up to 50 tags of 1–50 characters.
    #[serde(default, deserialize_with = "crate::validation::present_not_null")]
    #[schema(schema_with = tags_schema, required = false)]
    #[schemars(
        with = "Vec<String>",
        length(max = MAX_TAGS),
        inner(length(min = 1, max = TAG_MAX_CHARS))
    )]
    pub tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::validation::explicit_null")]
    #[schema(value_type = Option<String>, format = Date)]
    #[schemars(transform = format("date"))]
    pub entry_date: Option<Option<String>>,
}

impl Input for UpdateInput {
    fn check(&self, issues: &mut Issues) {
        if let Some(title) = &self.title {
            issues.trimmed_string_length("title", title, 1, TITLE_MAX_CHARS);
        }
        if let Some(content) = &self.content {
            issues.string_length("content", content, 0, CONTENT_MAX_CHARS);
        }
        if let Some(Some(mood)) = self.mood {
            check_mood(issues, mood);
        }
        if let Some(tags) = &self.tags {
            check_tags(issues, tags);
        }
        if let Some(Some(date)) = &self.entry_date {
            parse_date(issues, "entryDate", date);
        }
    }
}

impl UpdateInput {
    fn changes_nothing(&self) -> bool {
        self.title.is_none()
            && self.content.is_none()
            && self.mood.is_none()
            && self.tags.is_none()
            && self.entry_date.is_none()
    }
}

/// `EDIT_CONFLICT` (409) with the row's current version, when it is not `expected`.
pub fn check_version(
    expected: Option<i64>,
    current_version: i64,
    current_updated_at: DateTime<Utc>,
    what: &str,
) -> Result<(), ApiError> {
    match expected {
        Some(expected) if expected != current_version => Err(ApiError::Defined {
            code: "EDIT_CONFLICT",
            status: StatusCode::CONFLICT,
            message: format!(
                "{what} was changed by someone else (version {current_version}, you edited version {expected})"
            ),
            data: Some(ErrorData::EditConflict {
                current_version,
                current_updated_at: current_updated_at.timestamp_millis(),
            }),
        }),
        _ => Ok(()),
    }
}

/// `journalEntries.update`: a partial update, version + 1. With `expectedVersion`, a stale
/// edit answers `EDIT_CONFLICT`. An update without any field answers the entry unchanged.
pub async fn update(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<UpdateInput>,
) -> Result<Rpc<JournalEntry>, ApiError> {
    let mut tx = state.db.begin().await?;
    let current = load_changeable(&mut tx, input.journal_entry_id, session.user_id).await?;
    if current.deleted_at.is_some() {
        return Err(ApiError::defined(
            "ENTRY_DELETED",
            StatusCode::CONFLICT,
            "This journal entry is deleted; restore it before editing",
        ));
    }
    let updated = update_loaded(&mut tx, current, input, session.user_id).await?;
    tx.commit().await?;
    Ok(Rpc(updated))
}

/// Apply a (checked) partial update to `current`, locked in `tx` and live, by `actor_user_id`:
/// the row, its changeset and its `journal_entry.updated` event. Not committed. Shared by the
/// RPC procedure and `PATCH /api/v1/journal-entries/{id}`.
pub async fn update_loaded(
    tx: &mut PgConnection,
    current: JournalEntry,
    input: UpdateInput,
    actor_user_id: Uuid,
) -> Result<JournalEntry, ApiError> {
    check_version(
        input.expected_version,
        current.version,
        current.updated_at,
        "This journal entry",
    )?;
    if input.changes_nothing() {
        return Ok(current);
    }
    let written: Written = sqlx::query_as(&format!(
        "UPDATE journal_entries SET
            title = coalesce($2, title),
            content = coalesce($3, content),
            mood = CASE WHEN $4 THEN $5 ELSE mood END,
            tags = coalesce($6, tags),
            entry_date = CASE WHEN $7 THEN $8 ELSE entry_date END,
            updated_at = now(), version = version + 1
          WHERE journal_entry_id = $1
          RETURNING {WRITTEN_COLUMNS}"
    ))
    .bind(current.journal_entry_id)
    .bind(input.title.as_deref().map(str::trim))
    .bind(&input.content)
    .bind(input.mood.is_some())
    .bind(input.mood.flatten())
    .bind(&input.tags)
    .bind(input.entry_date.is_some())
    .bind(input.entry_date.flatten().as_deref().and_then(to_date))
    .fetch_one(&mut *tx)
    .await?;
    let facts = written.facts();
    let updated = written.entry;
    let event = JournalEntryUpdated {
        journal_entry_id: updated.journal_entry_id.to_string(),
        author_user_id: updated.author_user_id.to_string(),
        team_id: updated.team_id_text(),
        version: updated.version,
        updated_by_user_id: actor_user_id.to_string(),
        facts: Some(facts),
    };
    bus::outbox::emit_ordered(&mut *tx, &event, &updated.journal_entry_id.to_string()).await?;
    let mut changes = Changes::new();
    changes.record(&[updated.scope()], Op::Update, &updated)?;
    changes.write(&mut *tx).await?;
    Ok(updated)
}

// ---------------------------------------------------------------------------------------------
// delete, restore

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdInput {
    pub journal_entry_id: Uuid,
}

impl Input for IdInput {}

/// `journalEntries.delete {journalEntryId}`: soft delete (the row with `deletedAt` is the
/// tombstone). Deleting a deleted entry answers it unchanged.
pub async fn delete(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<IdInput>,
) -> Result<Rpc<JournalEntry>, ApiError> {
    let mut tx = state.db.begin().await?;
    let current = load_changeable(&mut tx, input.journal_entry_id, session.user_id).await?;
    if current.deleted_at.is_some() {
        return Ok(Rpc(current));
    }
    let deleted = delete_loaded(&mut tx, current, session.user_id).await?;
    tx.commit().await?;
    Ok(Rpc(deleted))
}

/// Soft-delete the live entry `current`, locked in `tx`, by `actor_user_id`: the row, its
/// changeset and its `journal_entry.deleted` event. Not committed. Shared by the RPC
/// procedure and `DELETE /api/v1/journal-entries/{id}`.
pub async fn delete_loaded(
    tx: &mut PgConnection,
    current: JournalEntry,
    actor_user_id: Uuid,
) -> Result<JournalEntry, ApiError> {
    let written = set_deleted(&mut *tx, current.journal_entry_id, true).await?;
    let facts = written.facts();
    let deleted = written.entry;
    let event = JournalEntryDeleted {
        journal_entry_id: deleted.journal_entry_id.to_string(),
        author_user_id: deleted.author_user_id.to_string(),
        team_id: deleted.team_id_text(),
        version: deleted.version,
        deleted_by_user_id: actor_user_id.to_string(),
        facts: Some(facts),
    };
    bus::outbox::emit_ordered(&mut *tx, &event, &deleted.journal_entry_id.to_string()).await?;
    let mut changes = Changes::new();
    changes.record(&[deleted.scope()], Op::Delete, &deleted)?;
    // Its attachments go with it (and come back with a restore).
    crate::attachments::delete_for_entry(&mut *tx, deleted.journal_entry_id, &mut changes).await?;
    changes.write(&mut *tx).await?;
    Ok(deleted)
}

/// `journalEntries.restore {journalEntryId}`: undo a soft delete. Restoring a live entry
/// answers it unchanged.
pub async fn restore(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<IdInput>,
) -> Result<Rpc<JournalEntry>, ApiError> {
    let mut tx = state.db.begin().await?;
    let current = load_changeable(&mut tx, input.journal_entry_id, session.user_id).await?;
    if current.deleted_at.is_none() {
        return Ok(Rpc(current));
    }
    let written = set_deleted(&mut tx, current.journal_entry_id, false).await?;
    let facts = written.facts();
    let restored = written.entry;
    let event = JournalEntryRestored {
        journal_entry_id: restored.journal_entry_id.to_string(),
        author_user_id: restored.author_user_id.to_string(),
        team_id: restored.team_id_text(),
        version: restored.version,
        restored_by_user_id: session.user_id.to_string(),
        facts: Some(facts),
    };
    bus::outbox::emit_ordered(&mut tx, &event, &restored.journal_entry_id.to_string()).await?;
    let mut changes = Changes::new();
    changes.record(&[restored.scope()], Op::Update, &restored)?;
    if let Some(deleted_at) = current.deleted_at {
        crate::attachments::restore_for_entry(
            &mut tx,
            restored.journal_entry_id,
            deleted_at,
            &mut changes,
        )
        .await?;
    }
    changes.write(&mut tx).await?;
    tx.commit().await?;
    Ok(Rpc(restored))
}

/// Soft-delete (`deleted`) or restore an entry; either is a change, so the version moves.
async fn set_deleted(
    connection: &mut PgConnection,
    journal_entry_id: Uuid,
    deleted: bool,
) -> Result<Written, ApiError> {
    let entry = sqlx::query_as(&format!(
        "UPDATE journal_entries
            SET deleted_at = CASE WHEN $2 THEN now() END, updated_at = now(),
                version = version + 1
          WHERE journal_entry_id = $1
          RETURNING {WRITTEN_COLUMNS}"
    ))
    .bind(journal_entry_id)
    .bind(deleted)
    .fetch_one(&mut *connection)
    .await?;
    Ok(entry)
}
