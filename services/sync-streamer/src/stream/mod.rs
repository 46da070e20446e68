//! The stream (ARCHITECTURE §5, docs/sync.md): `GET /sync/stream` (SSE) and the same stream
//! as an oRPC event iterator at `/rpc/sync/stream`.
//!
//! A stream (1) registers with the hub for its scopes, (2) reads the read model's snapshot
//! (watermark W, the user's memberships), (3) sends `delta` pages of rows after the cursor up
//! to W, (4) sends what lies between W and the hub's position at registration (ring or
//! JetStream), (5) goes live from its queue. A frame at or below the last cursor sent is
//! dropped, so the handoff has neither a gap nor a duplicate.
//!
//! Live, the parts of one transaction in the scopes the client follows go out as one `change`
//! frame, each row version once (docs/sync.md, "Transactions"): a part waits, at most
//! `SYNC_TRANSACTION_WAIT_MS`, for the others the client follows; meanwhile other
//! transactions' frames go out carrying a cursor that says "up to the waiting part, and these
//! changesets past it" (`sync_protocol::cursor`), so a client that resumes from any cursor it
//! was sent gets every transaction whole and nothing twice.

use std::collections::{HashSet, VecDeque};

use std::convert::Infallible;
use std::sync::Arc;

use async_nats::jetstream;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use domain::ids::TeamId;
use serde::Deserialize;
use serde_json::Value;
use sqlx::PgPool;
use sync_protocol::TokenKey;
use sync_protocol::changes::Scope;
use sync_protocol::cursor::Cursor;
use sync_protocol::tables;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::catchup;
use crate::changesets::LiveChangeset;
use crate::config::SyncConfig;
use crate::error::StreamError;
use crate::hub::{self, Hub};
use crate::revocation::RevokedSessions;

mod live;
mod transactions;

use live::Connection;
use transactions::RecentVersions;

/// What the stream handlers share.
#[derive(Clone)]
pub struct StreamState {
    pub db: PgPool,
    pub jetstream: jetstream::Context,
    pub changes_stream: String,
    pub hub: Hub,
    pub config: Arc<SyncConfig>,
    pub tokens: TokenKey,
    pub revoked: RevokedSessions,
    pub shutdown: CancellationToken,
    pub catchups: Arc<Semaphore>,
}

pub fn routes(state: StreamState) -> Router {
    Router::new()
        .route("/sync/stream", get(plain_stream))
        .route("/rpc/sync/stream", any(rpc_stream))
        .with_state(state)
}

/// How frames go on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// Plain SSE for `EventSource` and any SSE client.
    Sse,
    /// oRPC's event-iterator framing (`event: message`, `data: {"json": ...}`, `event: done`).
    Orpc,
}

/// A stream request, once parsed.
struct Request_ {
    token: Option<String>,
    since: Option<String>,
    last_event_id: Option<String>,
    tables: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct PlainQuery {
    since: Option<String>,
    token: Option<String>,
    /// Comma-separated table names.
    tables: Option<String>,
}

async fn plain_stream(
    State(state): State<StreamState>,
    headers: HeaderMap,
    query: Result<Query<PlainQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return StreamError::BadInput {
            field: "query",
            problem: "the query string could not be read".to_owned(),
        }
        .into_response();
    };
    let request = Request_ {
        token: bearer(&headers).or(query.token),
        since: query.since,
        last_event_id: last_event_id(&headers),
        tables: query.tables.map(|tables| {
            tables
                .split(',')
                .map(str::trim)
                .filter(|table| !table.is_empty())
                .map(str::to_owned)
                .collect()
        }),
    };
    match open(&state, request, Flavor::Sse).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// The oRPC input: `{since?: string | number, tables?: string[]}`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "SyncStreamInput")]
pub struct RpcInput {
    /// The cursor of the last frame seen (a string, or a number).
    #[schemars(with = "Option<CursorInput>")]
    since: Option<Value>,
    tables: Option<Vec<String>>,
}

/// What `since` may be: the schema of [`RpcInput::since`].
#[derive(schemars::JsonSchema)]
#[schemars(untagged, rename = "Cursor")]
#[allow(dead_code)]
enum CursorInput {
    Text(String),
    Number(u64),
}

async fn rpc_stream(State(state): State<StreamState>, request: Request) -> Response {
    match rpc_request(request).await {
        Ok(parsed) => match open(&state, parsed, Flavor::Orpc).await {
            Ok(response) => response,
            Err(error) => error.into_rpc_response(),
        },
        Err(error) => error.into_rpc_response(),
    }
}

async fn rpc_request(request: Request) -> Result<Request_, StreamError> {
    let headers = request.headers().clone();
    let envelope: Option<Value> = if request.method() == Method::GET {
        let data = url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .filter(|(name, _)| name == "data")
            .map(|(_, value)| value.into_owned())
            .last();
        match data {
            None => None,
            Some(data) => Some(serde_json::from_str(&data).map_err(|_| malformed())?),
        }
    } else {
        let body = axum::body::to_bytes(request.into_body(), 64 * 1024)
            .await
            .map_err(|_| malformed())?;
        if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            Some(serde_json::from_slice(&body).map_err(|_| malformed())?)
        }
    };
    let json = envelope
        .and_then(|mut envelope| envelope.get_mut("json").map(Value::take))
        .unwrap_or(Value::Null);
    let input: RpcInput = if json.is_null() {
        RpcInput::default()
    } else {
        serde_json::from_value(json).map_err(|error| StreamError::BadInput {
            field: "input",
            problem: error.to_string(),
        })?
    };
    let since = match input.since {
        None | Some(Value::Null) => None,
        Some(Value::String(since)) => Some(since),
        Some(Value::Number(since)) => Some(since.to_string()),
        Some(_) => {
            return Err(StreamError::BadInput {
                field: "since",
                problem: "expected a cursor (a string, or a number)".to_owned(),
            });
        }
    };
    Ok(Request_ {
        token: bearer(&headers),
        since,
        last_event_id: last_event_id(&headers),
        tables: input.tables,
    })
}

fn malformed() -> StreamError {
    StreamError::BadInput {
        field: "body",
        problem: "Malformed request: expected {\"json\": {...}}".to_owned(),
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!token.is_empty()).then(|| token.to_owned())
}

fn last_event_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

fn parse_cursor(field: &'static str, raw: &str) -> Result<Cursor, StreamError> {
    Cursor::parse(raw).map_err(|error| StreamError::BadInput {
        field,
        problem: format!("`{raw}` is not a cursor sent by this stream ({error})"),
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Authenticate, register, read the snapshot; then answer with the stream.
async fn open(
    state: &StreamState,
    request: Request_,
    flavor: Flavor,
) -> Result<Response, StreamError> {
    if state.shutdown.is_cancelled() {
        return Err(StreamError::ShuttingDown);
    }
    // Before the tail runs, the hub's position means nothing: the handoff needs it.
    if !state.hub.has_position() {
        return Err(StreamError::NotReady);
    }
    let token = request.token.ok_or(StreamError::MissingToken)?;
    let claims = state.tokens.verify(&token, now_ms())?;
    if state.revoked.contains(claims.session_id) {
        return Err(StreamError::SessionRevoked);
    }
    // `Last-Event-ID` (a reconnect) overrides `since`.
    let since = match (&request.last_event_id, &request.since) {
        (Some(id), _) => parse_cursor("Last-Event-ID", id)?,
        (None, Some(since)) if !since.trim().is_empty() => parse_cursor("since", since)?,
        _ => Cursor::default(),
    };
    if let Some(unknown) = request
        .tables
        .iter()
        .flatten()
        .find(|table| !tables::is_synced(table))
    {
        return Err(StreamError::BadInput {
            field: "tables",
            problem: format!("unknown table `{unknown}` (known: {})", tables::names()),
        });
    }
    let user_scope = Scope::User(claims.user_id).key();
    let mut scopes = vec![user_scope.clone()];
    scopes.extend(
        claims
            .team_ids
            .iter()
            .map(|team_id| Scope::Team(*team_id).key()),
    );
    // Registered before the snapshot: every changeset after `position` reaches the queue.
    let registration = state
        .hub
        .register(
            claims.user_id,
            claims.session_id,
            scopes,
            state.config.client_buffer_bytes,
            state.config.max_streams_per_user,
        )
        .ok_or(StreamError::TooManyStreams)?;
    let mut snapshot = catchup::snapshot(&state.db, claims.user_id).await?;

    let token_teams: HashSet<TeamId> = claims.team_ids.iter().copied().collect();
    let mut effective = HashSet::new();
    let mut removed = Vec::new();
    let mut full_resend = HashSet::new();
    let mut since = since;
    let reset = since.resumes() && since.through() < snapshot.horizon;
    if reset {
        since = Cursor::default();
    }
    if since.highest() > snapshot.watermark {
        // The client is ahead of the read model: it saw changesets live (a tail runs ahead of
        // the materializer, e.g. while a new leader takes over) that the read model has not
        // applied. Its memberships as of its cursor are the read model's plus its own
        // membership changes in (watermark, since]: a removal it was told about live must
        // not be served again, nor a later re-join taken for a team it still holds.
        let seen = changesets_between(state, snapshot.watermark + 1, since.highest())
            .await
            .map_err(|error| {
                tracing::warn!(%error, "reading the changesets up to the client's cursor failed");
                StreamError::NotReady
            })?;
        for changeset in seen
            .iter()
            .filter(|changeset| changeset.scope == user_scope && since.holds(changeset.seq))
        {
            snapshot.apply_own_memberships(changeset, claims.user_id);
        }
    }
    for membership in &snapshot.memberships {
        if membership.active && token_teams.contains(&membership.team_id) {
            effective.insert(membership.team_id);
            if !since.holds(membership.seq) {
                // Joined (or changed role) after the cursor: the client may not have the
                // team's rows at all.
                full_resend.insert(membership.team_id);
            }
        } else if membership.active {
            if membership.updated_at_ms > claims.issued_at || !since.holds(membership.seq) {
                // Joined after the token was issued, or after the cursor: the token is out of
                // date. Streaming on would carry the cursor past the join while the client has
                // none of the team's rows, and a later reconnect could not tell. (`updated_at`
                // is the joining transaction's start, which can precede a token issued before
                // that transaction committed, so the time alone is not enough.)
                return Err(StreamError::TokenStale);
            }
            // The token no longer lists a team the read model still shows: the api removed
            // the member and the materializer has not caught up. Treat it as removed.
            if since.resumes() {
                removed.push(membership.team_id);
            }
        } else if since.resumes() && !since.holds(membership.seq) {
            removed.push(membership.team_id);
        }
    }
    // A team sent again from its start: the client may hold rows of it (it was removed and
    // re-added while away, or its role changed); it drops them first, so every row version
    // it then gets is new to it.
    if since.resumes() {
        removed.extend(full_resend.iter().copied());
    }
    let pinned = snapshot.pinned_memberships(&since, &effective);
    let (sender, receiver) = mpsc::channel::<Bytes>(4);
    let connection = Connection {
        state: state.clone(),
        claims,
        registration,
        user_scope,
        effective,
        tables: request.tables,
        taken: since.through(),
        cursor: since,
        assembling: Vec::new(),
        finished: VecDeque::new(),
        sent_versions: RecentVersions::default(),
        flavor,
        sender,
        retry_sent: false,
    };
    tokio::spawn(connection.run(snapshot.watermark, reset, removed, full_resend, pinned));
    let body = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(bytes), receiver))
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The changesets in `from..=to` (`from` ≥ 1): from the ring when it reaches them, else from
/// JetStream up to the stream's end (a cursor beyond it has nothing more to read).
async fn changesets_between(
    state: &StreamState,
    from: u64,
    to: u64,
) -> Result<Vec<Arc<LiveChangeset>>, String> {
    if let Some(changesets) = state.hub.range(from, to) {
        return Ok(changesets);
    }
    let stream = state
        .jetstream
        .get_stream(&state.changes_stream)
        .await
        .map_err(|error| error.to_string())?;
    let to = to.min(stream.cached_info().state.last_sequence);
    hub::read_range(&state.jetstream, &state.changes_stream, from, to).await
}
