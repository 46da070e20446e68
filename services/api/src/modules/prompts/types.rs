//! Prompts and schedules as clients see them, the procedures' inputs and their checks.

use chrono::{DateTime, NaiveTime, Utc};
use domain::ids::{PromptId, TeamId, UserId};
use domain::time::EpochMillis;
use serde::{Deserialize, Serialize};

use crate::contract::schema::Text;
use crate::contract::schema::Timezone;
use crate::http::validation::Input;
use crate::http::validation::{Issues, check_date, item, parse_timezone};
use domain::time::DateInput;
use sync_protocol::changes::{Scope, SyncedRow};

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
    pub prompt_id: PromptId,
    pub owner_user_id: Option<UserId>,
    pub team_id: Option<TeamId>,
    pub author_user_id: UserId,
    pub text: String,
    pub schedule: Option<Schedule>,
    /// Epoch milliseconds.
    pub created_at: EpochMillis,
    /// Epoch milliseconds.
    pub updated_at: EpochMillis,
    /// Epoch milliseconds; set on a deleted prompt.
    pub deleted_at: Option<EpochMillis>,
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
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
            deleted_at: row.deleted_at.map(Into::into),
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

pub(crate) fn parse_time(text: &str) -> Option<NaiveTime> {
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
        let mut issue = crate::http::validation::Issue::new(
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

// The command the RPC procedure and `POST /api/v1/prompts` (its body: `CreatePromptBody`) run.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateInput {
    /// 1–500 characters, not blank (stored trimmed).
    #[schemars(length(max = TEXT_MAX_CHARS), transform = Text::trimmed().min(1))]
    pub text: String,
    /// Set by the server in the open API (the key's team).
    pub team_id: Option<TeamId>,
    pub schedule: Option<Schedule>,
}

// The body of `POST /api/v1/prompts`: `CreateInput` without `teamId`, which the server sets to
// the key's team (a client sending it gets `unrecognized_keys`). Not a doc comment: it would
// become the schema's description in the OpenAPI document.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = CreatePromptInput)]
pub struct CreatePromptBody {
    /// 1–500 characters, not blank (stored trimmed).
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000]*[^\u0000\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000]*$"
    )]
    pub text: String,
    pub schedule: Option<Schedule>,
}

impl CreatePromptBody {
    /// The command, in `team_id`.
    pub(crate) fn into_input(self, team_id: TeamId) -> CreateInput {
        CreateInput {
            text: self.text,
            team_id: Some(team_id),
            schedule: self.schedule,
        }
    }
}

impl Input for CreateInput {
    fn check(&self, issues: &mut Issues) {
        check_text(issues, &self.text);
        if let Some(schedule) = &self.schedule {
            check_schedule(issues, schedule);
        }
    }
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListInput {
    pub team_id: Option<TeamId>,
    pub include_deleted: Option<bool>,
}

/// `list` may be called without input.
impl Input for Option<ListInput> {}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PromptList {
    pub items: Vec<Prompt>,
}

/// `prompts.update` input: `schedule: null` removes the schedule.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateInput {
    pub prompt_id: PromptId,
    pub expected_version: Option<i64>,
    #[serde(
        default,
        deserialize_with = "crate::http::validation::present_not_null"
    )]
    #[schemars(with = "String", length(max = TEXT_MAX_CHARS), transform = Text::trimmed().min(1))]
    pub text: Option<String>,
    #[serde(default, deserialize_with = "crate::http::validation::explicit_null")]
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

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdInput {
    pub prompt_id: PromptId,
}

impl Input for IdInput {}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TodayInput {
    pub date: Option<DateInput>,
}

impl Input for Option<TodayInput> {
    fn check(&self, issues: &mut Issues) {
        if let Some(TodayInput { date: Some(date) }) = self {
            check_date(issues, "date", date);
        }
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Today {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub prompt: Option<Prompt>,
}

/// A `prompts` row as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct PromptRow {
    pub(crate) prompt_id: PromptId,
    pub(crate) owner_user_id: Option<UserId>,
    pub(crate) team_id: Option<TeamId>,
    pub(crate) author_user_id: UserId,
    pub(crate) text: String,
    pub(crate) schedule_time: Option<NaiveTime>,
    pub(crate) schedule_timezone: Option<String>,
    pub(crate) schedule_weekdays: Option<Vec<i16>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) deleted_at: Option<DateTime<Utc>>,
    pub(crate) version: i64,
}
