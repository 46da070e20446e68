//! A request log row, its redaction and bounds, and `logs.list`'s input and output.

use domain::ids::{ApiTeamId, TeamId};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::http::pagination::KeysetCursor;
use crate::http::validation::Input;
use crate::http::validation::{EpochMillis, Issues};

/// What is kept of a request header that carries a credential.
const REDACTED: &str = "[redacted]";
/// Longest header value kept (characters); longer ones are cut, ending in `…`.
pub const MAX_HEADER_VALUE_CHARS: usize = 256;
/// Longest path kept (characters).
pub const MAX_PATH_CHARS: usize = 512;
/// Longest user agent and request id kept (characters).
const MAX_SHORT_FIELD_CHARS: usize = 256;
/// The request headers a log keeps: what an integrator needs to see why a request did what
/// it did. Anything else a client sends is left out, so junk headers cannot grow a row.
/// `authorization` and `cookie` are kept only as `[redacted]` (it shows the key went in the
/// wrong place).
pub(crate) const LOGGED_HEADERS: [&str; 17] = [
    "accept",
    "accept-encoding",
    "accept-language",
    "authorization",
    "content-encoding",
    "content-length",
    "content-type",
    "cookie",
    "host",
    "idempotency-key",
    "if-match",
    "if-none-match",
    "origin",
    "referer",
    "user-agent",
    "x-api-key",
    "x-request-id",
];

/// One open API request, as logged.
#[derive(Debug, Clone)]
pub struct RequestLog {
    pub request_log_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub team_id: Option<TeamId>,
    pub api_team_id: Option<ApiTeamId>,
    pub api_key_prefix: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub duration: Duration,
    pub client_ip: IpAddr,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub error_code: Option<String>,
    pub request_headers: RedactedHeaders,
}

impl RequestLog {
    /// Cut the client-chosen text fields to their bounds and redact anything shaped like a
    /// credential in them: a row has a bounded size whatever the client sent.
    pub(crate) fn bounded(mut self) -> Self {
        self.path = bounded_text(&self.path, MAX_PATH_CHARS);
        self.user_agent = self
            .user_agent
            .map(|agent| bounded_text(&agent, MAX_SHORT_FIELD_CHARS));
        self.request_id = self
            .request_id
            .map(|id| bounded_text(&id, MAX_SHORT_FIELD_CHARS));
        self
    }
}

/// Request headers by lowercase name: only [`LOGGED_HEADERS`], each value cut to
/// [`MAX_HEADER_VALUE_CHARS`], every credential replaced by `[redacted]`; an API key keeps
/// only its public prefix, so a log still shows which key was presented.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct RedactedHeaders(pub BTreeMap<String, String>);

impl RedactedHeaders {
    pub fn from_headers(headers: &HeaderMap, api_key_prefix: Option<&str>) -> Self {
        let mut kept = BTreeMap::new();
        for name in LOGGED_HEADERS {
            let mut values = headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                continue;
            }
            let value = match (name, api_key_prefix) {
                ("x-api-key", Some(prefix)) => format!("{prefix}…{REDACTED}"),
                ("x-api-key" | "authorization" | "cookie", _) => REDACTED.to_owned(),
                _ => {
                    // Repeated headers are joined, as HTTP allows for most of them.
                    let joined = values
                        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                        .collect::<Vec<_>>()
                        .join(", ");
                    bounded_text(&joined, MAX_HEADER_VALUE_CHARS)
                }
            };
            kept.insert(name.to_owned(), value);
        }
        Self(kept)
    }
}

/// `text` with credentials redacted, cut to `max_chars` characters (ending in `…` when cut).
/// Redaction comes first, so a cut can never leave part of a secret behind.
pub fn bounded_text(text: &str, max_chars: usize) -> String {
    let redacted = redact_secrets(text);
    match redacted.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &redacted[..end]),
        None => redacted,
    }
}

/// Redaction by value, whatever header or field it came in: anything shaped like one of our
/// API keys keeps only its public prefix, and a value carrying a bearer or basic credential
/// or a session cookie is replaced whole.
pub fn redact_secrets(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    if ["bearer ", "basic ", "session="]
        .iter()
        .any(|marker| lower.contains(marker))
    {
        return REDACTED.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("jk_") {
        out.push_str(&rest[..start]);
        let token = &rest[start..];
        let token_len = token
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(token.len());
        let token = &token[..token_len];
        if token.len() <= KEY_PREFIX_LEN {
            // At most a prefix (`jk_live_<id>`): public.
            out.push_str(token);
        } else {
            // Keep what precedes the secret (the last `_`), never more than a prefix.
            let kept = token
                .rfind('_')
                .filter(|at| *at >= "jk_".len())
                .unwrap_or("jk_".len())
                .min(KEY_PREFIX_LEN);
            out.push_str(&token[..kept]);
            out.push('…');
            out.push_str(REDACTED);
        }
        rest = &rest[start + token_len..];
    }
    out.push_str(rest);
    out
}

/// `logs.list` input: a team's request logs, newest first, filtered.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListInput {
    pub team_id: TeamId,
    #[schemars(range(min = 1, max = LIST_LIMIT_MAX))]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// Exactly this status.
    #[schemars(range(min = STATUS_MIN, max = STATUS_MAX))]
    pub status: Option<i64>,
    /// A status class: 2 for 2xx … 5 for 5xx.
    #[schemars(range(min = STATUS_CLASS_MIN, max = STATUS_CLASS_MAX))]
    pub status_class: Option<i64>,
    /// Paths starting with this (e.g. `/api/v1/journal-entries`).
    #[schemars(length(min = 1, max = PATH_PREFIX_MAX_CHARS))]
    pub path_prefix: Option<String>,
    #[schemars(length(min = 1, max = KEY_PREFIX_MAX_CHARS))]
    pub api_key_prefix: Option<String>,
    /// Epoch ms (or a `Date`), inclusive.
    pub from: Option<EpochMillis>,
    /// Epoch ms (or a `Date`), exclusive.
    pub to: Option<EpochMillis>,
}

/// `logs.list`'s limits: the checks and the contract's schemas both use them.
pub const LIST_LIMIT_MAX: i64 = 100;
pub const STATUS_MIN: i64 = 100;
pub const STATUS_MAX: i64 = 599;
pub const STATUS_CLASS_MIN: i64 = 1;
pub const STATUS_CLASS_MAX: i64 = 5;
pub const PATH_PREFIX_MAX_CHARS: usize = 200;
pub const KEY_PREFIX_MAX_CHARS: usize = 64;

impl Input for ListInput {
    fn check(&self, issues: &mut Issues) {
        if let Some(limit) = self.limit {
            issues.number_range("limit", limit, 1, LIST_LIMIT_MAX);
        }
        if let Some(cursor) = &self.cursor
            && KeysetCursor::decode(cursor).is_none()
        {
            issues.format("cursor", "cursor", "Invalid cursor");
        }
        if let Some(status) = self.status {
            issues.number_range("status", status, STATUS_MIN, STATUS_MAX);
        }
        if let Some(class) = self.status_class {
            issues.number_range("statusClass", class, STATUS_CLASS_MIN, STATUS_CLASS_MAX);
        }
        if let Some(path) = &self.path_prefix {
            issues.string_length("pathPrefix", path, 1, PATH_PREFIX_MAX_CHARS);
        }
        if let Some(prefix) = &self.api_key_prefix {
            issues.string_length("apiKeyPrefix", prefix, 1, KEY_PREFIX_MAX_CHARS);
        }
        if let (Some(from), Some(to)) = (self.from, self.to)
            && to <= from
        {
            issues.custom("to", "to must be after from");
        }
    }
}

/// A logged request, as `logs.list` returns it.
#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestLogRow {
    pub request_log_id: Uuid,
    pub created_at: EpochMillis,
    pub team_id: Option<TeamId>,
    pub api_team_id: Option<ApiTeamId>,
    pub api_key_prefix: Option<String>,
    pub method: String,
    pub path: String,
    pub status: i16,
    pub duration_us: i64,
    pub client_ip: String,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub request_bytes: i64,
    pub response_bytes: i64,
    pub error_code: Option<String>,
    #[schemars(with = "RedactedHeaders")]
    pub request_headers: sqlx::types::Json<RedactedHeaders>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "RequestLogPage")]
pub struct Page {
    pub items: Vec<RequestLogRow>,
    pub next_cursor: Option<String>,
}

/// Length of a key's public prefix, `jk_live_<8 characters>`.
const KEY_PREFIX_LEN: usize = 16;
