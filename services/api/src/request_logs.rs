//! Open API request logs: one row per request with a valid key, refused ones included, written
//! off the request path by a background writer in batches; app-team admins read them with
//! `logs.list`. Rows are bounded whatever the client sends: an allow-list of headers, each
//! value cut, credentials redacted by name and by value. Requests without a valid key belong
//! to no team: they are counted, and only a sample per client IP is written. The daily
//! `purge-retention` job deletes rows past `REQUEST_LOG_RETENTION_DAYS`.
//!
//! Backpressure, not loss: the queue to the writer is bounded, and [`RequestLogSink::record`]
//! waits for room, so when Postgres falls behind the open API slows down instead of dropping
//! log rows. On shutdown the writer drains the queue before the process exits
//! ([`RequestLogWriter::finish`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, QueryBuilder};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::pagination::{KeysetCursor, finish_page};
use crate::rate_limit::IpRateLimiter;
use crate::rpc::{Input, Rpc, RpcQuery, RpcRouter};
use crate::session::Protected;
use crate::teams::{Role, member_role};
use crate::validation::{EpochMillis, Issues};

/// Rows the queue holds before `record` waits.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4_096;
/// Rows per `INSERT`: the writer takes whatever is queued, up to this many.
const MAX_BATCH: usize = 500;
/// Longest pause between retries of a failed batch (Postgres down): the queue fills and
/// requests wait meanwhile.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What is kept of a request header that carries a credential.
const REDACTED: &str = "[redacted]";
/// Longest header value kept (characters); longer ones are cut, ending in `…`.
pub const MAX_HEADER_VALUE_CHARS: usize = 256;
/// Longest path kept (characters).
pub const MAX_PATH_CHARS: usize = 512;
/// Longest user agent and request id kept (characters).
const MAX_SHORT_FIELD_CHARS: usize = 256;
/// Request log rows kept for requests without a valid key, per client IP and minute (per
/// replica); beyond it they are only counted (`open_api_unauthenticated_requests_total`).
const UNAUTHENTICATED_ROWS_PER_IP_MINUTE: u32 = 10;
/// The same, for all client IPs together (per replica): many addresses cannot fill the table.
const UNAUTHENTICATED_ROWS_PER_MINUTE: u32 = 120;

/// The request headers a log keeps: what an integrator needs to see why a request did what
/// it did. Anything else a client sends is left out, so junk headers cannot grow a row.
/// `authorization` and `cookie` are kept only as `[redacted]` (it shows the key went in the
/// wrong place).
const LOGGED_HEADERS: [&str; 17] = [
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
    pub team_id: Option<Uuid>,
    pub api_team_id: Option<Uuid>,
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
    fn bounded(mut self) -> Self {
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

/// Length of a key's public prefix, `jk_live_<8 characters>`.
const KEY_PREFIX_LEN: usize = 16;

/// Where handlers send log rows. Cheap to clone.
#[derive(Clone)]
pub struct RequestLogSink {
    sender: mpsc::Sender<RequestLog>,
    unauthenticated: Arc<UnauthenticatedBudget>,
}

/// How many rows requests without a valid key may write: they belong to no team (nobody can
/// list them), so beyond a sample for operators they are only counted.
struct UnauthenticatedBudget {
    per_ip: IpRateLimiter,
    overall: DefaultDirectRateLimiter,
}

impl UnauthenticatedBudget {
    fn new() -> Self {
        Self {
            per_ip: IpRateLimiter::per_minute(UNAUTHENTICATED_ROWS_PER_IP_MINUTE),
            overall: RateLimiter::direct(Quota::per_minute(
                NonZeroU32::new(UNAUTHENTICATED_ROWS_PER_MINUTE).unwrap_or(NonZeroU32::MIN),
            )),
        }
    }

    fn admits(&self, client_ip: IpAddr) -> bool {
        self.per_ip.check(client_ip.to_canonical()).is_ok() && self.overall.check().is_ok()
    }
}

impl RequestLogSink {
    /// Queue a row, waiting for room when the writer is behind (backpressure). A request
    /// without a valid key (no team) is counted in `open_api_unauthenticated_requests_total`
    /// and written only within the unauthenticated budget.
    pub async fn record(&self, log: RequestLog) {
        if log.team_id.is_none() {
            let logged = self.unauthenticated.admits(log.client_ip);
            metrics::counter!(
                "open_api_unauthenticated_requests_total",
                "service" => crate::SERVICE,
                "logged" => if logged { "true" } else { "false" }
            )
            .increment(1);
            if !logged {
                return;
            }
        }
        if self.sender.send(log.bounded()).await.is_err() {
            // Only once the writer was told to finish: a request still running after the
            // server stopped serving.
            tracing::error!("the request log writer has stopped; a request log row is lost");
            metrics::counter!("request_logs_lost_total").increment(1);
        }
    }
}

/// The background writer; [`RequestLogWriter::finish`] drains it.
pub struct RequestLogWriter {
    handle: JoinHandle<()>,
    closing: CancellationToken,
}

impl RequestLogWriter {
    /// Call once no more requests are being served: the queue is closed (a late `record`
    /// fails, counted in `request_logs_lost_total`), every queued row is written, and the
    /// writer ends. Gives up after `grace` (Postgres down at shutdown), saying so.
    pub async fn finish(self, grace: Duration) {
        self.closing.cancel();
        if tokio::time::timeout(grace, self.handle).await.is_err() {
            tracing::error!(
                grace_ms = grace.as_millis() as u64,
                "request logs were not all written before shutdown"
            );
        }
    }
}

/// Start the writer with a queue of `capacity` rows.
pub fn spawn_writer(pool: PgPool, capacity: usize) -> (RequestLogSink, RequestLogWriter) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    let closing = CancellationToken::new();
    let handle = tokio::spawn(write_batches(pool, receiver, closing.clone()));
    (
        RequestLogSink {
            sender,
            unauthenticated: Arc::new(UnauthenticatedBudget::new()),
        },
        RequestLogWriter { handle, closing },
    )
}

async fn write_batches(
    pool: PgPool,
    mut receiver: mpsc::Receiver<RequestLog>,
    closing: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut closed = false;
    loop {
        // `recv_many` returns as soon as one row is there, with all that are (up to
        // MAX_BATCH): one row per insert when idle, large batches under load, no timer
        // needed. Once the queue is closed it returns what is left, then 0.
        let received = if closed {
            receiver.recv_many(&mut batch, MAX_BATCH).await
        } else {
            tokio::select! {
                received = receiver.recv_many(&mut batch, MAX_BATCH) => received,
                () = closing.cancelled() => {
                    receiver.close();
                    closed = true;
                    continue;
                }
            }
        };
        if received == 0 {
            break;
        }
        let mut pause = Duration::from_millis(50);
        loop {
            match insert(&pool, &batch).await {
                Ok(()) => {
                    metrics::counter!("request_logs_written_total").increment(batch.len() as u64);
                    break;
                }
                Err(error) => {
                    // Keep the rows and retry: the queue fills and requests wait meanwhile.
                    tracing::warn!(%error, rows = batch.len(), "writing request logs failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
            }
        }
        batch.clear();
    }
}

async fn insert(pool: &PgPool, rows: &[RequestLog]) -> Result<(), sqlx::Error> {
    let mut ids = Vec::with_capacity(rows.len());
    let mut created_at = Vec::with_capacity(rows.len());
    let mut team_ids = Vec::with_capacity(rows.len());
    let mut api_team_ids = Vec::with_capacity(rows.len());
    let mut prefixes = Vec::with_capacity(rows.len());
    let mut methods = Vec::with_capacity(rows.len());
    let mut paths = Vec::with_capacity(rows.len());
    let mut statuses = Vec::with_capacity(rows.len());
    let mut durations = Vec::with_capacity(rows.len());
    let mut client_ips = Vec::with_capacity(rows.len());
    let mut user_agents = Vec::with_capacity(rows.len());
    let mut request_ids = Vec::with_capacity(rows.len());
    let mut request_bytes = Vec::with_capacity(rows.len());
    let mut response_bytes = Vec::with_capacity(rows.len());
    let mut error_codes = Vec::with_capacity(rows.len());
    let mut headers = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(row.request_log_id);
        created_at.push(row.created_at);
        team_ids.push(row.team_id);
        api_team_ids.push(row.api_team_id);
        prefixes.push(row.api_key_prefix.clone());
        methods.push(row.method.clone());
        paths.push(row.path.clone());
        statuses.push(i16::try_from(row.status).unwrap_or(i16::MAX));
        durations.push(i64::try_from(row.duration.as_micros()).unwrap_or(i64::MAX));
        client_ips.push(row.client_ip.to_string());
        user_agents.push(row.user_agent.clone());
        request_ids.push(row.request_id.clone());
        request_bytes.push(i64::try_from(row.request_bytes).unwrap_or(i64::MAX));
        response_bytes.push(i64::try_from(row.response_bytes).unwrap_or(i64::MAX));
        error_codes.push(row.error_code.clone());
        headers.push(sqlx::types::Json(row.request_headers.clone()));
    }
    // One statement per batch; `ON CONFLICT` makes a retried batch that had in fact
    // committed (a lost reply) harmless.
    sqlx::query(
        "INSERT INTO request_logs
                (request_log_id, created_at, team_id, api_team_id, api_key_prefix, method, path,
                 status, duration_us, client_ip, user_agent, request_id, request_bytes,
                 response_bytes, error_code, request_headers)
         SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::uuid[], $4::uuid[], $5::text[],
                              $6::text[], $7::text[], $8::int2[], $9::int8[], $10::text[]::inet[],
                              $11::text[], $12::text[], $13::int8[], $14::int8[], $15::text[],
                              $16::jsonb[])
         ON CONFLICT (request_log_id) DO NOTHING",
    )
    .bind(ids)
    .bind(created_at)
    .bind(team_ids)
    .bind(api_team_ids)
    .bind(prefixes)
    .bind(methods)
    .bind(paths)
    .bind(statuses)
    .bind(durations)
    .bind(client_ips)
    .bind(user_agents)
    .bind(request_ids)
    .bind(request_bytes)
    .bind(response_bytes)
    .bind(error_codes)
    .bind(headers)
    .execute(pool)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// logs.list

pub fn routes() -> RpcRouter {
    RpcRouter::new().query("logs.list", list)
}

/// `logs.list` input: a team's request logs, newest first, filtered.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListInput {
    pub team_id: Uuid,
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
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    pub created_at: DateTime<Utc>,
    pub team_id: Option<Uuid>,
    pub api_team_id: Option<Uuid>,
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

/// `logs.list` (GET-able): for the team's owners and admins; a member is `FORBIDDEN`,
/// anybody else `NOT_FOUND`.
async fn list(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<ListInput>,
) -> Result<Rpc<Page>, ApiError> {
    let limit = input.limit.unwrap_or(50);
    let mut conn = state.db.acquire().await?;
    match member_role(&mut conn, input.team_id, session.user_id).await? {
        None => return Err(ApiError::not_found("Team")),
        Some(Role::Member) => {
            return Err(ApiError::forbidden(
                "Only the team's owners and admins can read its request logs",
            ));
        }
        Some(Role::Admin | Role::Owner) => {}
    }
    let mut query = QueryBuilder::<Postgres>::new(
        "SELECT request_log_id, created_at, team_id, api_team_id, api_key_prefix, method, path,
                status, duration_us, host(client_ip) AS client_ip, user_agent, request_id,
                request_bytes, response_bytes, error_code, request_headers
           FROM request_logs WHERE team_id = ",
    );
    query.push_bind(input.team_id);
    if let Some(status) = input.status {
        query.push(" AND status = ");
        query.push_bind(status);
    }
    if let Some(class) = input.status_class {
        query.push(" AND status / 100 = ");
        query.push_bind(class);
    }
    if let Some(path) = &input.path_prefix {
        query.push(" AND starts_with(path, ");
        query.push_bind(path.clone());
        query.push(")");
    }
    if let Some(prefix) = &input.api_key_prefix {
        query.push(" AND api_key_prefix = ");
        query.push_bind(prefix.clone());
    }
    if let Some(from) = input.from.map(EpochMillis::at) {
        query.push(" AND created_at >= ");
        query.push_bind(from);
    }
    if let Some(to) = input.to.map(EpochMillis::at) {
        query.push(" AND created_at < ");
        query.push_bind(to);
    }
    if let Some(cursor) = input.cursor.as_deref().and_then(KeysetCursor::decode) {
        query.push(" AND (created_at, request_log_id) < (");
        query.push_bind(cursor.created_at);
        query.push(", ");
        query.push_bind(cursor.id);
        query.push(")");
    }
    query.push(" ORDER BY created_at DESC, request_log_id DESC LIMIT ");
    query.push_bind(limit + 1);
    let mut items: Vec<RequestLogRow> = query.build_query_as().fetch_all(&mut *conn).await?;
    let next_cursor = finish_page(&mut items, limit, |last| KeysetCursor {
        created_at: last.created_at,
        id: last.request_log_id,
    });
    Ok(Rpc(Page { items, next_cursor }))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const KEY: &str = "jk_live_abcd1234_s3cr3tS3CR3Ts3cr3tS3CR3Ts3cr3tS3CR3Ts3cr3tS3C";

    #[test]
    fn credentials_are_redacted_and_an_api_key_keeps_only_its_prefix() {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_static(KEY));
        headers.insert("authorization", HeaderValue::from_static("Bearer s3cr3t"));
        headers.insert("cookie", HeaderValue::from_static("session=s3cr3t"));
        headers.insert("x-refresh-token", HeaderValue::from_static("s3cr3t"));
        headers.insert("user-agent", HeaderValue::from_static("curl/8"));
        headers.append("accept", HeaderValue::from_static("a/b"));
        headers.append("accept", HeaderValue::from_static("c/d"));
        let kept = RedactedHeaders::from_headers(&headers, Some("jk_live_abcd1234"));
        let text = serde_json::to_string(&kept).unwrap_or_default();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert_eq!(kept.0["x-api-key"], "jk_live_abcd1234…[redacted]");
        assert_eq!(kept.0["authorization"], "[redacted]");
        assert_eq!(kept.0["cookie"], "[redacted]");
        assert!(
            !kept.0.contains_key("x-refresh-token"),
            "not on the allow-list"
        );
        assert_eq!(kept.0["user-agent"], "curl/8");
        assert_eq!(kept.0["accept"], "a/b, c/d");
        let without_prefix = RedactedHeaders::from_headers(&headers, None);
        assert_eq!(without_prefix.0["x-api-key"], "[redacted]");
    }

    /// Issue 15: a full key sent under another header name (or inside any value) was stored.
    #[test]
    fn keys_and_bearer_values_are_redacted_by_value_in_any_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "user-agent",
            HeaderValue::from_str(&format!("bot/1 (key {KEY})"))
                .unwrap_or(HeaderValue::from_static("")),
        );
        headers.insert("referer", HeaderValue::from_static("Bearer abc.def.ghi"));
        headers.insert(
            "origin",
            HeaderValue::from_static("https://x.test; session=s3cr3t"),
        );
        let kept = RedactedHeaders::from_headers(&headers, None);
        let text = serde_json::to_string(&kept).unwrap_or_default();
        assert!(
            !text.contains("s3cr3t") && !text.contains("abc.def"),
            "{text}"
        );
        assert_eq!(
            kept.0["user-agent"],
            "bot/1 (key jk_live_abcd1234…[redacted])"
        );
        assert_eq!(kept.0["referer"], "[redacted]");
        assert_eq!(kept.0["origin"], "[redacted]");
        // In the path too, and a key-like token of another shape never keeps its tail.
        assert_eq!(
            bounded_text(&format!("/api/v1/{KEY}/x"), MAX_PATH_CHARS),
            "/api/v1/jk_live_abcd1234…[redacted]/x"
        );
        assert_eq!(
            redact_secrets("jk_bbbb2222_TOPSECRET"),
            "jk_bbbb2222…[redacted]"
        );
        assert_eq!(
            redact_secrets("jk_liveabcdefghijklmnopqrstuvwxyz"),
            "jk_…[redacted]"
        );
        assert_eq!(
            redact_secrets("prefix jk_live_abcd1234 only"),
            "prefix jk_live_abcd1234 only"
        );
    }

    /// Issue 15: 30 KB of junk headers made a 31.6 KB row (one reached 380 KB).
    #[test]
    fn junk_headers_are_left_out_and_every_kept_value_is_capped() {
        let mut headers = HeaderMap::new();
        let junk = "x".repeat(30_000);
        for index in 0..20 {
            headers.insert(
                axum::http::HeaderName::from_bytes(format!("x-junk-{index}").as_bytes())
                    .unwrap_or(axum::http::HeaderName::from_static("x-junk")),
                HeaderValue::from_str(&junk).unwrap_or(HeaderValue::from_static("")),
            );
        }
        for _ in 0..50 {
            headers.append(
                "accept",
                HeaderValue::from_str(&junk).unwrap_or(HeaderValue::from_static("")),
            );
        }
        headers.insert(
            "user-agent",
            HeaderValue::from_str(&junk).unwrap_or(HeaderValue::from_static("")),
        );
        let kept = RedactedHeaders::from_headers(&headers, None);
        assert_eq!(kept.0.keys().collect::<Vec<_>>(), ["accept", "user-agent"]);
        for value in kept.0.values() {
            assert_eq!(
                value.chars().count(),
                MAX_HEADER_VALUE_CHARS + 1,
                "cut, with …"
            );
        }
        let size = serde_json::to_string(&kept).unwrap_or_default().len();
        assert!(size < 1_000, "{size} bytes");
        // Every allowed header at its cap still makes a small row.
        let mut all = HeaderMap::new();
        for name in LOGGED_HEADERS {
            all.insert(
                name,
                HeaderValue::from_str(&junk).unwrap_or(HeaderValue::from_static("")),
            );
        }
        let size = serde_json::to_string(&RedactedHeaders::from_headers(&all, None))
            .unwrap_or_default()
            .len();
        assert!(size < 8 * 1024, "{size} bytes");
        assert_eq!(bounded_text("ééé", 2), "éé…");
    }
}
