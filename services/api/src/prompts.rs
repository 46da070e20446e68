//! Journaling prompts owned by a user or a team, optionally scheduled:
//! `prompts.create|list|update|delete|today`.
//!
//! - A personal prompt is seen and changed by its owner; a team prompt is seen by every active
//!   member and created or changed by the team's admins and owners (members get `FORBIDDEN`,
//!   everybody else `NOT_FOUND`).
//! - Every write records the prompt's changeset (owner's or team's scope) in its transaction.
//!   Prompts emit no events.
//! - A deleted prompt cannot be updated (`409 PROMPT_DELETED`); deleting it again answers it
//!   unchanged.
//!
//! `prompts.today` — the prompt of the caller's day `D` (`date`, or today in the caller's
//! `users.timezone`). The caller's day is the interval `[D 00:00, D+1 00:00)` in the caller's
//! zone. A scheduled prompt occurs at its `time` in its own `timezone` on every local date of
//! that zone whose ISO weekday is in `weekdays`; it is due on `D` when one of its occurrences
//! falls in the caller's day (so for a caller in the schedule's zone: when `D`'s weekday is
//! scheduled). Of the due prompts, the one whose occurrence comes first wins (ties: oldest
//! prompt, then id). Without a due prompt, one of the visible unscheduled prompts is picked,
//! ordered by id, at index `days(D) mod count` (stable for the day, rotating day by day).
//! Otherwise `prompt: null`.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::AppState;
use crate::changes::{Changes, Op, Scope, SyncedRow};
use crate::contract::{Text, Timezone, errors, format};
use crate::error::ApiError;
use crate::journal_entries::check_version;
use crate::rpc::{Input, Rpc, RpcInput, RpcQuery, RpcRouter};
use crate::session::Protected;
use crate::teams::{MY_TEAMS_SQL, Role, member_role};
use crate::validation::{Issues, item, parse_date, parse_timezone};

pub fn routes() -> RpcRouter {
    RpcRouter::new()
        .mutation("prompts.create", create)
        .query("prompts.list", list)
        .mutation("prompts.update", update)
        .errors(&[errors::EDIT_CONFLICT, errors::PROMPT_DELETED])
        .mutation("prompts.delete", delete)
        .query("prompts.today", today)
}

const COLUMNS: &str = "prompt_id, owner_user_id, team_id, author_user_id, text, schedule_time, \
                       schedule_timezone, schedule_weekdays, created_at, updated_at, deleted_at, \
                       version";

/// When a prompt is scheduled: at `time` (`HH:MM`) in `timezone` on ISO `weekdays`
/// (1 = Monday … 7 = Sunday).
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Schedule {
    /// Local time of day, `HH:MM`.
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    #[schemars(regex(pattern = TIME_PATTERN))]
    pub time: String,
    /// An IANA time zone, e.g. `Europe/Paris`.
    #[schema(schema_with = timezone_schema)]
    #[schemars(with = "Timezone")]
    pub timezone: String,
    /// ISO weekdays (1 = Monday … 7 = Sunday), at least one.
    #[schema(schema_with = weekdays_schema)]
    #[schemars(
        length(min = 1, max = MAX_WEEKDAYS),
        inner(range(min = MONDAY, max = SUNDAY)),
        extend("uniqueItems" = true)
    )]
    pub weekdays: Vec<i16>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Prompt {
    pub prompt_id: Uuid,
    pub owner_user_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
    pub author_user_id: Uuid,
    pub text: String,
    pub schedule: Option<Schedule>,
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
    /// Epoch milliseconds; set on a deleted prompt.
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    #[schemars(with = "Option<i64>")]
    #[schema(value_type = Option<i64>)]
    pub deleted_at: Option<DateTime<Utc>>,
    pub version: i64,
}

impl SyncedRow for Prompt {
    const TABLE: &'static str = "prompts";
    fn row_id(&self) -> String {
        self.prompt_id.to_string()
    }
    fn version(&self) -> i64 {
        self.version
    }
}

impl Prompt {
    pub(crate) fn scope(&self) -> Scope {
        Scope::owner(
            self.owner_user_id.unwrap_or(self.author_user_id),
            self.team_id,
        )
    }
}

/// A `prompts` row as stored.
#[derive(Debug, sqlx::FromRow)]
struct PromptRow {
    prompt_id: Uuid,
    owner_user_id: Option<Uuid>,
    team_id: Option<Uuid>,
    author_user_id: Uuid,
    text: String,
    schedule_time: Option<NaiveTime>,
    schedule_timezone: Option<String>,
    schedule_weekdays: Option<Vec<i16>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    version: i64,
}

impl From<PromptRow> for Prompt {
    fn from(row: PromptRow) -> Self {
        let schedule = match (
            row.schedule_time,
            row.schedule_timezone,
            row.schedule_weekdays,
        ) {
            (Some(time), Some(timezone), Some(weekdays)) => Some(Schedule {
                time: time.format("%H:%M").to_string(),
                timezone,
                weekdays,
            }),
            _ => None,
        };
        Self {
            prompt_id: row.prompt_id,
            owner_user_id: row.owner_user_id,
            team_id: row.team_id,
            author_user_id: row.author_user_id,
            text: row.text,
            schedule,
            created_at: row.created_at,
            updated_at: row.updated_at,
            deleted_at: row.deleted_at,
            version: row.version,
        }
    }
}

/// `HH:MM`, 00:00–23:59.
/// A prompt's limits: the checks and the contract's schemas both use them.
pub const TEXT_MAX_CHARS: usize = 500;
/// A schedule's weekdays: ISO numbers, each at most once.
pub const MONDAY: i16 = 1;
pub const SUNDAY: i16 = 7;
pub const MAX_WEEKDAYS: usize = 7;
/// A schedule's `HH:MM` (what [`parse_time`] reads).
pub const TIME_PATTERN: &str = "^([01][0-9]|2[0-3]):[0-5][0-9]$";

fn parse_time(text: &str) -> Option<NaiveTime> {
    if text.len() != 5 {
        return None;
    }
    NaiveTime::parse_from_str(text, "%H:%M").ok()
}

/// The document's `weekdays`: what [`check_schedule`] enforces (utoipa has no attribute for
/// the items' range).
fn weekdays_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
                .minimum(Some(1))
                .maximum(Some(7)),
        )
        .min_items(Some(1))
        .max_items(Some(7))
        .unique_items(true)
        .description(Some(
            "ISO weekdays (1 = Monday … 7 = Sunday), at least one.",
        ))
        .build()
}

/// The document's `timezone`: the IANA names [`parse_timezone`] accepts (chrono-tz's).
fn timezone_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(chrono_tz::TZ_VARIANTS.iter().map(|zone| zone.name())))
        .description(Some("An IANA time zone, e.g. `Europe/Paris`."))
        .build()
}

fn check_text(issues: &mut Issues, text: &str) {
    issues.trimmed_string_length("text", text, 1, TEXT_MAX_CHARS);
}

fn check_schedule(issues: &mut Issues, schedule: &Schedule) {
    if parse_time(&schedule.time).is_none() {
        issues.format(
            "schedule.time",
            "time",
            "Invalid time: expected HH:MM (00:00-23:59)",
        );
    }
    parse_timezone(issues, "schedule.timezone", &schedule.timezone);
    if schedule.weekdays.is_empty() {
        let mut issue = crate::validation::Issue::new(
            "too_small",
            "schedule.weekdays",
            "Too small: expected array to have >=1 items",
        );
        issue.origin = Some("array");
        issue.minimum = Some(1);
        issue.inclusive = Some(true);
        issues.push(issue);
    }
    issues.array_length("schedule.weekdays", schedule.weekdays.len(), MAX_WEEKDAYS);
    for (index, weekday) in schedule.weekdays.iter().enumerate() {
        issues.number_range(
            item("schedule.weekdays", index),
            i64::from(*weekday),
            MONDAY.into(),
            SUNDAY.into(),
        );
        if schedule.weekdays[..index].contains(weekday) {
            issues.custom(
                item("schedule.weekdays", index),
                format!("Duplicate weekday {weekday}"),
            );
        }
    }
}

/// The schedule's columns (time, zone, sorted weekdays), all `None` without a schedule.
fn schedule_columns(
    schedule: Option<&Schedule>,
) -> (Option<NaiveTime>, Option<String>, Option<Vec<i16>>) {
    match schedule.and_then(|schedule| {
        parse_time(&schedule.time).map(|time| {
            let mut weekdays = schedule.weekdays.clone();
            weekdays.sort_unstable();
            (time, schedule.timezone.clone(), weekdays)
        })
    }) {
        Some((time, zone, weekdays)) => (Some(time), Some(zone), Some(weekdays)),
        None => (None, None, None),
    }
}

/// `NOT_FOUND` for a team the caller is not in, `FORBIDDEN` below admin.
async fn require_team_admin(
    conn: &mut PgConnection,
    team_id: Uuid,
    user_id: Uuid,
) -> Result<(), ApiError> {
    match member_role(conn, team_id, user_id).await? {
        None => Err(ApiError::not_found("Team")),
        Some(role) if role < Role::Admin => Err(ApiError::forbidden(
            "Only team admins and owners can manage the team's prompts",
        )),
        Some(_) => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// create

#[derive(Debug, Deserialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = CreatePromptInput)]
pub struct CreateInput {
    /// 1–500 characters, not blank (stored trimmed).
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000]*[^\u0000\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000]*$"
    )]
    #[schemars(length(max = TEXT_MAX_CHARS), transform = Text::trimmed().min(1))]
    pub text: String,
    /// Set by the server in the open API (the key's team).
    #[schema(ignore)]
    pub team_id: Option<Uuid>,
    pub schedule: Option<Schedule>,
}

impl Input for CreateInput {
    fn check(&self, issues: &mut Issues) {
        check_text(issues, &self.text);
        if let Some(schedule) = &self.schedule {
            check_schedule(issues, schedule);
        }
    }
}

/// `prompts.create {text, teamId?, schedule?}`: personal, or a team's (admins and owners).
async fn create(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<CreateInput>,
) -> Result<Rpc<Prompt>, ApiError> {
    create_prompt(&state.db, session.user_id, input)
        .await
        .map(Rpc)
}

/// Create a prompt by `author_user_id` (checked input; a team's prompt only by its admins)
/// with its changeset, in one transaction. Shared by the RPC procedure and the open API's
/// `POST /api/v1/prompts` (author = the key's creator).
pub async fn create_prompt(
    db: &sqlx::PgPool,
    author_user_id: Uuid,
    input: CreateInput,
) -> Result<Prompt, ApiError> {
    let mut tx = db.begin().await?;
    if let Some(team_id) = input.team_id {
        require_team_admin(&mut tx, team_id, author_user_id).await?;
    }
    let owner = match input.team_id {
        Some(_) => None,
        None => Some(author_user_id),
    };
    let (time, zone, weekdays) = schedule_columns(input.schedule.as_ref());
    let row: PromptRow = sqlx::query_as(&format!(
        "INSERT INTO prompts (owner_user_id, team_id, author_user_id, text,
                              schedule_time, schedule_timezone, schedule_weekdays)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING {COLUMNS}"
    ))
    .bind(owner)
    .bind(input.team_id)
    .bind(author_user_id)
    .bind(input.text.trim())
    .bind(time)
    .bind(zone)
    .bind(weekdays)
    .fetch_one(&mut *tx)
    .await?;
    let prompt = Prompt::from(row);
    let mut changes = Changes::new();
    changes.record(&[prompt.scope()], Op::Insert, &prompt)?;
    changes.write(&mut tx).await?;
    tx.commit().await?;
    Ok(prompt)
}

// ---------------------------------------------------------------------------------------------
// list

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListInput {
    pub team_id: Option<Uuid>,
    pub include_deleted: Option<bool>,
}

/// `list` may be called without input.
impl Input for Option<ListInput> {}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PromptList {
    pub items: Vec<Prompt>,
}

/// `prompts.list {teamId?, includeDeleted?}` (GET-able) → `{items}`: the caller's prompts and
/// their teams' (or one team's), newest first.
async fn list(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<Option<ListInput>>,
) -> Result<Rpc<PromptList>, ApiError> {
    let input = input.unwrap_or_default();
    let mut conn = state.db.acquire().await?;
    if let Some(team_id) = input.team_id
        && member_role(&mut conn, team_id, session.user_id)
            .await?
            .is_none()
    {
        return Err(ApiError::not_found("Team"));
    }
    let items = list_prompts(
        &mut conn,
        session.user_id,
        input.team_id,
        input.include_deleted.unwrap_or(false),
    )
    .await?;
    Ok(Rpc(PromptList { items }))
}

/// The prompts `user_id` sees (theirs and their teams'), or `team_id`'s whose membership the
/// caller has checked (or, in the open API, that the key belongs to), newest first.
pub async fn list_prompts(
    conn: &mut PgConnection,
    user_id: Uuid,
    team_id: Option<Uuid>,
    include_deleted: bool,
) -> Result<Vec<Prompt>, ApiError> {
    let rows: Vec<PromptRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM prompts
          WHERE (CASE WHEN $2::uuid IS NULL
                      THEN owner_user_id = $1 OR team_id IN ({MY_TEAMS_SQL})
                      ELSE team_id = $2 END)
            AND ($3 OR deleted_at IS NULL)
          ORDER BY created_at DESC, prompt_id DESC"
    ))
    .bind(user_id)
    .bind(team_id)
    .bind(include_deleted)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(Prompt::from).collect())
}

// ---------------------------------------------------------------------------------------------
// update, delete

/// A prompt the caller can see (owner, or member of its team), locked for the transaction,
/// checked that they may change it (owner, or admin of its team).
async fn load_changeable(
    conn: &mut PgConnection,
    prompt_id: Uuid,
    user_id: Uuid,
) -> Result<Prompt, ApiError> {
    let row: Option<PromptRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM prompts WHERE prompt_id = $1 FOR UPDATE"
    ))
    .bind(prompt_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(prompt) = row.map(Prompt::from) else {
        return Err(ApiError::not_found("Prompt"));
    };
    match prompt.team_id {
        None if prompt.owner_user_id == Some(user_id) => Ok(prompt),
        None => Err(ApiError::not_found("Prompt")),
        Some(team_id) => match member_role(conn, team_id, user_id).await? {
            None => Err(ApiError::not_found("Prompt")),
            Some(role) if role < Role::Admin => Err(ApiError::forbidden(
                "Only team admins and owners can manage the team's prompts",
            )),
            Some(_) => Ok(prompt),
        },
    }
}

/// `prompts.update` input: `schedule: null` removes the schedule.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateInput {
    pub prompt_id: Uuid,
    pub expected_version: Option<i64>,
    #[serde(default, deserialize_with = "crate::validation::present_not_null")]
    #[schemars(with = "String", length(max = TEXT_MAX_CHARS), transform = Text::trimmed().min(1))]
    pub text: Option<String>,
    #[serde(default, deserialize_with = "crate::validation::explicit_null")]
    pub schedule: Option<Option<Schedule>>,
}

impl Input for UpdateInput {
    fn check(&self, issues: &mut Issues) {
        if let Some(text) = &self.text {
            check_text(issues, text);
        }
        if let Some(Some(schedule)) = &self.schedule {
            check_schedule(issues, schedule);
        }
    }
}

/// `prompts.update {promptId, expectedVersion?, text?, schedule?}`: version + 1; a stale
/// `expectedVersion` answers `EDIT_CONFLICT`; without any field, the prompt unchanged.
async fn update(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<UpdateInput>,
) -> Result<Rpc<Prompt>, ApiError> {
    let mut tx = state.db.begin().await?;
    let current = load_changeable(&mut tx, input.prompt_id, session.user_id).await?;
    if current.deleted_at.is_some() {
        return Err(ApiError::defined(
            "PROMPT_DELETED",
            StatusCode::CONFLICT,
            "This prompt is deleted",
        ));
    }
    check_version(
        input.expected_version,
        current.version,
        current.updated_at,
        "This prompt",
    )?;
    if input.text.is_none() && input.schedule.is_none() {
        return Ok(Rpc(current));
    }
    let (time, zone, weekdays) = schedule_columns(input.schedule.as_ref().and_then(Option::as_ref));
    let row: PromptRow = sqlx::query_as(&format!(
        "UPDATE prompts SET
            text = coalesce($2, text),
            schedule_time = CASE WHEN $3 THEN $4 ELSE schedule_time END,
            schedule_timezone = CASE WHEN $3 THEN $5 ELSE schedule_timezone END,
            schedule_weekdays = CASE WHEN $3 THEN $6 ELSE schedule_weekdays END,
            updated_at = now(), version = version + 1
          WHERE prompt_id = $1
          RETURNING {COLUMNS}"
    ))
    .bind(current.prompt_id)
    .bind(input.text.as_deref().map(str::trim))
    .bind(input.schedule.is_some())
    .bind(time)
    .bind(zone)
    .bind(weekdays)
    .fetch_one(&mut *tx)
    .await?;
    let prompt = Prompt::from(row);
    let mut changes = Changes::new();
    changes.record(&[prompt.scope()], Op::Update, &prompt)?;
    changes.write(&mut tx).await?;
    tx.commit().await?;
    Ok(Rpc(prompt))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdInput {
    pub prompt_id: Uuid,
}

impl Input for IdInput {}

/// `prompts.delete {promptId}`: soft delete; a deleted prompt answers unchanged. Entries that
/// answered it keep their `promptId`.
async fn delete(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<IdInput>,
) -> Result<Rpc<Prompt>, ApiError> {
    let mut tx = state.db.begin().await?;
    let current = load_changeable(&mut tx, input.prompt_id, session.user_id).await?;
    if current.deleted_at.is_some() {
        return Ok(Rpc(current));
    }
    let row: PromptRow = sqlx::query_as(&format!(
        "UPDATE prompts SET deleted_at = now(), updated_at = now(), version = version + 1
          WHERE prompt_id = $1
          RETURNING {COLUMNS}"
    ))
    .bind(current.prompt_id)
    .fetch_one(&mut *tx)
    .await?;
    let prompt = Prompt::from(row);
    let mut changes = Changes::new();
    changes.record(&[prompt.scope()], Op::Delete, &prompt)?;
    changes.write(&mut tx).await?;
    tx.commit().await?;
    Ok(Rpc(prompt))
}

// ---------------------------------------------------------------------------------------------
// today

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TodayInput {
    #[schemars(transform = format("date"))]
    pub date: Option<String>,
}

impl Input for Option<TodayInput> {
    fn check(&self, issues: &mut Issues) {
        if let Some(TodayInput { date: Some(date) }) = self {
            parse_date(issues, "date", date);
        }
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Today {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub prompt: Option<Prompt>,
}

/// The instant of local `date` `time` in `zone`; a time skipped by a DST change is taken an
/// hour later (when the clocks have moved on), an ambiguous one at its first occurrence.
pub(crate) fn local_instant(zone: Tz, date: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
    let local = NaiveDateTime::new(date, time);
    zone.from_local_datetime(&local)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(local + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|at| at.with_timezone(&Utc))
}

/// The first occurrence of `schedule` within `[start, end)`, if any.
fn occurrence_within(
    schedule: &Schedule,
    day: NaiveDate,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let zone: Tz = schedule.timezone.parse().ok()?;
    let time = parse_time(&schedule.time)?;
    // Zones are at most 26 hours apart: the schedule's local dates that can fall in the
    // caller's day are within two days of it.
    let first = day.checked_sub_days(Days::new(2))?;
    (0..5)
        .filter_map(|offset| first.checked_add_days(Days::new(offset)))
        .filter(|date| {
            let weekday = i16::try_from(date.weekday().number_from_monday()).unwrap_or(0);
            schedule.weekdays.contains(&weekday)
        })
        .filter_map(|date| local_instant(zone, date, time))
        .find(|at| *at >= start && *at < end)
}

/// The prompt for `day` among `prompts` (see the module docs), `caller_zone` being the
/// caller's time zone.
pub fn pick_for_day(prompts: &[Prompt], day: NaiveDate, caller_zone: Tz) -> Option<&Prompt> {
    let start = local_instant(caller_zone, day, NaiveTime::MIN)?;
    let end = local_instant(caller_zone, day.succ_opt()?, NaiveTime::MIN)?;
    let due = prompts
        .iter()
        .filter(|prompt| prompt.deleted_at.is_none())
        .filter_map(|prompt| {
            let schedule = prompt.schedule.as_ref()?;
            occurrence_within(schedule, day, start, end).map(|at| (at, prompt))
        })
        .min_by_key(|(at, prompt)| (*at, prompt.created_at, prompt.prompt_id));
    if let Some((_, prompt)) = due {
        return Some(prompt);
    }
    let mut unscheduled: Vec<&Prompt> = prompts
        .iter()
        .filter(|prompt| prompt.deleted_at.is_none() && prompt.schedule.is_none())
        .collect();
    if unscheduled.is_empty() {
        return None;
    }
    unscheduled.sort_by_key(|prompt| prompt.prompt_id);
    let days = usize::try_from(day.num_days_from_ce()).unwrap_or(0);
    unscheduled.get(days % unscheduled.len()).copied()
}

/// `prompts.today {date?}` (GET-able) → `{date, prompt}`.
async fn today(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<Option<TodayInput>>,
) -> Result<Rpc<Today>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let timezone: Option<String> =
        sqlx::query_scalar("SELECT timezone FROM users WHERE user_id = $1")
            .bind(session.user_id)
            .fetch_optional(&mut *conn)
            .await?;
    let caller_zone: Tz = timezone
        .and_then(|zone| zone.parse().ok())
        .unwrap_or(Tz::UTC);
    let day = match input
        .and_then(|input| input.date)
        .and_then(|date| NaiveDate::parse_from_str(&date, "%Y-%m-%d").ok())
    {
        Some(day) => day,
        None => Utc::now().with_timezone(&caller_zone).date_naive(),
    };
    let rows: Vec<PromptRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM prompts
          WHERE (owner_user_id = $1 OR team_id IN ({MY_TEAMS_SQL})) AND deleted_at IS NULL"
    ))
    .bind(session.user_id)
    .fetch_all(&mut *conn)
    .await?;
    let prompts: Vec<Prompt> = rows.into_iter().map(Prompt::from).collect();
    let prompt = pick_for_day(&prompts, day, caller_zone).cloned();
    Ok(Rpc(Today {
        date: day.format("%Y-%m-%d").to_string(),
        prompt,
    }))
}

/// The account purge (`crate::account_purge`): soft-delete the personal prompts of `user_id`
/// (deleted ones too) with their text and schedule cleared, in the caller's transaction. A
/// prompt the user wrote for a team stays: it is the team's. Returns the rows changed (their
/// tombstones are the caller's to record).
pub(crate) async fn purge_personal(
    conn: &mut sqlx::PgConnection,
    user_id: Uuid,
) -> Result<Vec<Prompt>, ApiError> {
    let rows: Vec<PromptRow> = sqlx::query_as(&format!(
        "UPDATE prompts
            SET text = '', schedule_time = NULL, schedule_timezone = NULL,
                schedule_weekdays = NULL, deleted_at = coalesce(deleted_at, now()),
                updated_at = now(), version = version + 1
          WHERE owner_user_id = $1
            AND (deleted_at IS NULL OR text <> '' OR schedule_time IS NOT NULL)
          RETURNING {COLUMNS}"
    ))
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Prompt::from).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn prompt(id: u128, schedule: Option<(&str, &str, &[i16])>) -> Prompt {
        let at = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        Prompt {
            prompt_id: Uuid::from_u128(id),
            owner_user_id: Some(Uuid::from_u128(99)),
            team_id: None,
            author_user_id: Uuid::from_u128(99),
            text: format!("prompt {id}"),
            schedule: schedule.map(|(time, timezone, weekdays)| Schedule {
                time: time.to_owned(),
                timezone: timezone.to_owned(),
                weekdays: weekdays.to_vec(),
            }),
            created_at: at,
            updated_at: at,
            deleted_at: None,
            version: 1,
        }
    }

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn scheduled_prompts_are_due_on_their_weekdays_earliest_first() {
        // 2025-06-02 is a Monday.
        let prompts = [
            prompt(1, Some(("18:00", "UTC", &[1]))),
            prompt(2, Some(("08:00", "UTC", &[1, 3]))),
            prompt(3, Some(("07:00", "UTC", &[2]))),
            prompt(4, None),
        ];
        let monday = pick_for_day(&prompts, date("2025-06-02"), Tz::UTC).unwrap();
        assert_eq!(monday.prompt_id, Uuid::from_u128(2));
        let tuesday = pick_for_day(&prompts, date("2025-06-03"), Tz::UTC).unwrap();
        assert_eq!(tuesday.prompt_id, Uuid::from_u128(3));
        let friday = pick_for_day(&prompts, date("2025-06-06"), Tz::UTC).unwrap();
        assert_eq!(friday.prompt_id, Uuid::from_u128(4));
    }

    #[test]
    fn schedules_are_evaluated_in_their_own_zone() {
        // Monday 23:30 in Los Angeles is Tuesday 08:30 in Berlin.
        let prompts = [prompt(1, Some(("23:30", "America/Los_Angeles", &[1])))];
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert!(pick_for_day(&prompts, date("2025-06-02"), berlin).is_none());
        assert!(pick_for_day(&prompts, date("2025-06-03"), berlin).is_some());
        let los_angeles: Tz = "America/Los_Angeles".parse().unwrap();
        assert!(pick_for_day(&prompts, date("2025-06-02"), los_angeles).is_some());
    }

    #[test]
    fn unscheduled_prompts_rotate_by_day_deterministically() {
        let prompts = [prompt(3, None), prompt(1, None), prompt(2, None)];
        let day = date("2025-06-02");
        let first = pick_for_day(&prompts, day, Tz::UTC).unwrap().prompt_id;
        assert_eq!(
            pick_for_day(&prompts, day, Tz::UTC).unwrap().prompt_id,
            first
        );
        let next = pick_for_day(&prompts, day.succ_opt().unwrap(), Tz::UTC)
            .unwrap()
            .prompt_id;
        assert_ne!(first, next);
        assert!(pick_for_day(&[], day, Tz::UTC).is_none());
    }
}
