//! A journal entry as clients see it, the procedures' inputs and outputs, and their checks.

use chrono::NaiveDate;
use domain::ids::{JournalEntryId, PromptId, TeamId, UserId};
use serde::{Deserialize, Serialize};

use crate::contract::schema::Text;
use crate::http::pagination::KeysetCursor;
use crate::http::validation::Input;
use crate::http::validation::{EpochMillis, Issues, check_date, item};
use domain::time::DateInput;
use sync_protocol::changes::{Scope, SyncedRow};

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

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    pub journal_entry_id: JournalEntryId,
    pub author_user_id: UserId,
    pub team_id: Option<TeamId>,
    pub prompt_id: Option<PromptId>,
    pub title: String,
    pub content: String,
    pub mood: Option<i16>,
    pub tags: Vec<String>,
    #[schema(value_type = Option<String>, format = Date)]
    pub entry_date: Option<NaiveDate>,
    /// Epoch milliseconds.
    pub created_at: EpochMillis,
    /// Epoch milliseconds.
    pub updated_at: EpochMillis,
    /// Epoch milliseconds; set on a deleted entry.
    pub deleted_at: Option<EpochMillis>,
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

    pub(crate) fn team_id_text(&self) -> String {
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

// ---------------------------------------------------------------------------------------------
// create

// The command the RPC procedure and `POST /api/v1/journal-entries` (its body:
// `CreateEntryBody`) run.
/// `journalEntries.create` input (ARCHITECTURE §9).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateInput {
    /// 1–200 characters, not blank (stored trimmed).
    #[schemars(length(max = TITLE_MAX_CHARS), transform = Text::trimmed().min(1))]
    pub title: String,
    /// Up to 100,000 characters.
    #[schemars(length(max = CONTENT_MAX_CHARS))]
    pub content: String,
    /// 1–5.
    #[schemars(range(min = MOOD_MIN, max = MOOD_MAX))]
    pub mood: Option<i16>,
    /// Up to 50 tags of 1–50 characters.
    #[schemars(length(max = MAX_TAGS), inner(length(min = 1, max = TAG_MAX_CHARS)))]
    pub tags: Option<Vec<String>>,
    /// `YYYY-MM-DD`.
    pub entry_date: Option<DateInput>,
    /// Set by the server in the open API (the key's team).
    pub team_id: Option<TeamId>,
    pub prompt_id: Option<PromptId>,
}

/// The body of `POST /api/v1/journal-entries`: [`CreateInput`] without `teamId`, which the
/// server sets to the key's team (a client sending it gets `unrecognized_keys`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(
    as = CreateJournalEntryInput,
    description = "A new journal entry (in the open API, a team entry of the key's team)."
)]
pub struct CreateEntryBody {
    /// 1–200 characters, not blank (stored trimmed).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000]*[^\u0000\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000]*$"
    )]
    pub title: String,
    /// Up to 100,000 characters.
    #[schema(max_length = 100_000, pattern = r"^[^\u0000]*$")]
    pub content: String,
    /// 1–5.
    #[schema(minimum = 1, maximum = 5)]
    pub mood: Option<i16>,
    /// Up to 50 tags of 1–50 characters.
    #[schema(schema_with = nullable_tags_schema, required = false)]
    pub tags: Option<Vec<String>>,
    /// `YYYY-MM-DD`.
    #[schema(format = Date)]
    pub entry_date: Option<DateInput>,
    pub prompt_id: Option<PromptId>,
}

impl CreateEntryBody {
    /// The command, in `team_id`.
    pub(crate) fn into_input(self, team_id: TeamId) -> CreateInput {
        CreateInput {
            title: self.title,
            content: self.content,
            mood: self.mood,
            tags: self.tags,
            entry_date: self.entry_date,
            team_id: Some(team_id),
            prompt_id: self.prompt_id,
        }
    }
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
            check_date(issues, "entryDate", date);
        }
        // Teams and prompts are checked against the database by the procedure.
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetInput {
    pub journal_entry_id: JournalEntryId,
}

impl Input for GetInput {}

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
    pub team_id: Option<TeamId>,
    pub scope: Option<ListScope>,
    #[schemars(length(min = 1, max = TAG_MAX_CHARS))]
    pub tag: Option<String>,
    pub entry_date_from: Option<DateInput>,
    pub entry_date_to: Option<DateInput>,
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
            .as_ref()
            .and_then(|date| check_date(issues, "entryDateFrom", date));
        let to = input
            .entry_date_to
            .as_ref()
            .and_then(|date| check_date(issues, "entryDateTo", date));
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

// The command the RPC procedure and `PATCH /api/v1/journal-entries/{id}` (its body:
// `UpdateEntryBody`) run.
/// `journalEntries.update` input: every field optional; `mood: null` and `entryDate: null`
/// clear them.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateInput {
    /// From the path in the open API.
    pub journal_entry_id: JournalEntryId,
    pub expected_version: Option<i64>,
    /// 1–200 characters, not blank (stored trimmed).
    #[serde(
        default,
        deserialize_with = "crate::http::validation::present_not_null"
    )]
    #[schemars(with = "String", length(max = TITLE_MAX_CHARS), transform = Text::trimmed().min(1))]
    pub title: Option<String>,
    /// Up to 100,000 characters.
    #[serde(
        default,
        deserialize_with = "crate::http::validation::present_not_null"
    )]
    #[schemars(with = "String", length(max = CONTENT_MAX_CHARS))]
    pub content: Option<String>,
    /// 1–5; `null` clears it.
    #[serde(default, deserialize_with = "crate::http::validation::explicit_null")]
    #[schemars(range(min = MOOD_MIN, max = MOOD_MAX))]
    pub mood: Option<Option<i16>>,
    /// Up to 50 tags of 1–50 characters.
    #[serde(
        default,
        deserialize_with = "crate::http::validation::present_not_null"
    )]
    #[schemars(
        with = "Vec<String>",
        length(max = MAX_TAGS),
        inner(length(min = 1, max = TAG_MAX_CHARS))
    )]
    pub tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::http::validation::explicit_null")]
    pub entry_date: Option<Option<DateInput>>,
}

/// The body of `PATCH /api/v1/journal-entries/{journalEntryId}`: [`UpdateInput`] without the
/// entry's id, which is the path's (a client sending it gets `unrecognized_keys`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(
    as = UpdateJournalEntryInput,
    description = "A partial update: absent fields stay; `mood: null` and `entryDate: null` clear them; with `expectedVersion`, a stale edit answers 409 `EDIT_CONFLICT`."
)]
pub struct UpdateEntryBody {
    pub expected_version: Option<i64>,
    /// 1–200 characters, not blank (stored trimmed).
    #[serde(
        default,
        deserialize_with = "crate::http::validation::present_not_null"
    )]
    #[schema(
        value_type = String,
        required = false,
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000]*[^\u0000\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000]*$"
    )]
    pub title: Option<String>,
    /// Up to 100,000 characters.
    #[serde(
        default,
        deserialize_with = "crate::http::validation::present_not_null"
    )]
    #[schema(
        value_type = String,
        required = false,
        max_length = 100_000,
        pattern = r"^[^\u0000]*$"
    )]
    pub content: Option<String>,
    /// 1–5; `null` clears it.
    #[serde(default, deserialize_with = "crate::http::validation::explicit_null")]
    #[schema(value_type = Option<i16>, minimum = 1, maximum = 5)]
    pub mood: Option<Option<i16>>,
    /// Up to 50 tags of 1–50 characters.
    #[serde(
        default,
        deserialize_with = "crate::http::validation::present_not_null"
    )]
    #[schema(schema_with = tags_schema, required = false)]
    pub tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::http::validation::explicit_null")]
    #[schema(value_type = Option<String>, format = Date)]
    pub entry_date: Option<Option<DateInput>>,
}

impl UpdateEntryBody {
    /// The command, for the entry `journal_entry_id`.
    pub(crate) fn into_input(self, journal_entry_id: JournalEntryId) -> UpdateInput {
        UpdateInput {
            journal_entry_id,
            expected_version: self.expected_version,
            title: self.title,
            content: self.content,
            mood: self.mood,
            tags: self.tags,
            entry_date: self.entry_date,
        }
    }
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
            check_date(issues, "entryDate", date);
        }
    }
}

impl UpdateInput {
    pub(crate) fn changes_nothing(&self) -> bool {
        self.title.is_none()
            && self.content.is_none()
            && self.mood.is_none()
            && self.tags.is_none()
            && self.entry_date.is_none()
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdInput {
    pub journal_entry_id: JournalEntryId,
}

impl Input for IdInput {}
