//! The stream (ARCHITECTURE §5, docs/sync.md): `GET /sync/stream` (SSE) and the same stream
//! as an oRPC event iterator at `/rpc/sync/stream`.
//!
//! A stream (1) registers with the hub for its scopes, (2) reads the read model's snapshot
//! (watermark W, the user's memberships), (3) sends `delta` pages of rows after the cursor up
//! to W, (4) sends what lies between W and the hub's position at registration (ring or
//! JetStream), (5) goes live from its queue. A frame at or below the last cursor sent is
//! dropped, so the handoff has neither a gap nor a duplicate.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::Deserialize;
use serde_json::Value;
use sqlx::PgPool;
use sync_protocol::{SyncClaims, TokenKey};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::catchup::{self, CatchUp, Row};
use crate::config::SyncConfig;
use crate::error::StreamError;
use crate::frames::{CloseReason, Frame, LiveChange, LiveChangeset};
use crate::hub::{self, Hub, Next, Registration};
use crate::revocation::RevokedSessions;

/// The wire tables clients may filter on: the api's synced tables and the worker's insights.
pub const TABLES: [&str; 8] = [
    "journal_entries",
    "prompts",
    "teams",
    "team_members",
    "users",
    "attachments",
    "entry_insights",
    "entry_insight_days",
];

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
    #[schemars(with = "Option<Cursor>")]
    since: Option<Value>,
    tables: Option<Vec<String>>,
}

/// What `since` may be: the schema of [`RpcInput::since`].
#[derive(schemars::JsonSchema)]
#[schemars(untagged)]
#[allow(dead_code)]
enum Cursor {
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
                problem: "expected a cursor (a string of digits)".to_owned(),
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

fn parse_cursor(field: &'static str, raw: &str) -> Result<u64, StreamError> {
    raw.trim()
        .parse::<u64>()
        .map_err(|_| StreamError::BadInput {
            field,
            problem: format!("`{raw}` is not a cursor (a string of digits)"),
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
        _ => 0,
    };
    if let Some(unknown) = request
        .tables
        .iter()
        .flatten()
        .find(|table| !TABLES.contains(&table.as_str()))
    {
        return Err(StreamError::BadInput {
            field: "tables",
            problem: format!("unknown table `{unknown}` (known: {})", TABLES.join(", ")),
        });
    }
    let user_scope = format!("user.{}", claims.user_id);
    let mut scopes = vec![user_scope.clone()];
    scopes.extend(
        claims
            .team_ids
            .iter()
            .map(|team_id| format!("team.{team_id}")),
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

    let token_teams: HashSet<Uuid> = claims.team_ids.iter().copied().collect();
    let mut effective = HashSet::new();
    let mut removed = Vec::new();
    let mut full_resend = HashSet::new();
    let mut since = since;
    let reset = since > 0 && since < snapshot.horizon;
    if reset {
        since = 0;
    }
    if since > snapshot.watermark {
        // The client is ahead of the read model: it saw changesets live (a tail runs ahead of
        // the materializer, e.g. while a new leader takes over) that the read model has not
        // applied. Its memberships as of its cursor are the read model's plus its own
        // membership changes in (watermark, since]: a removal it was told about live must
        // not be served again, nor a later re-join taken for a team it still holds.
        let seen = changesets_between(state, snapshot.watermark + 1, since)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "reading the changesets up to the client's cursor failed");
                StreamError::NotReady
            })?;
        for changeset in seen
            .iter()
            .filter(|changeset| changeset.scope == user_scope)
        {
            snapshot.apply_own_memberships(changeset, claims.user_id);
        }
    }
    for membership in &snapshot.memberships {
        if membership.active && token_teams.contains(&membership.team_id) {
            effective.insert(membership.team_id);
            if membership.seq > since {
                // Joined (or changed role) after the cursor: the client may not have the
                // team's rows at all.
                full_resend.insert(membership.team_id);
            }
        } else if membership.active {
            if membership.updated_at_ms > claims.issued_at || membership.seq > since {
                // Joined after the token was issued, or after the cursor: the token is out of
                // date. Streaming on would carry the cursor past the join while the client has
                // none of the team's rows, and a later reconnect could not tell. (`updated_at`
                // is the joining transaction's start, which can precede a token issued before
                // that transaction committed, so the time alone is not enough.)
                return Err(StreamError::TokenStale);
            }
            // The token no longer lists a team the read model still shows: the api removed
            // the member and the materializer has not caught up. Treat it as removed.
            if since > 0 {
                removed.push(membership.team_id);
            }
        } else if since > 0 && membership.seq > since {
            removed.push(membership.team_id);
        }
    }
    let (sender, receiver) = mpsc::channel::<Bytes>(4);
    let connection = Connection {
        state: state.clone(),
        claims,
        registration,
        user_scope,
        effective,
        tables: request.tables,
        cursor: since,
        flavor,
        sender,
        retry_sent: false,
    };
    tokio::spawn(connection.run(snapshot.watermark, reset, removed, full_resend));
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

/// The client went away.
struct Gone;

enum Flow {
    Continue,
    Stop,
}

struct Connection {
    state: StreamState,
    claims: SyncClaims,
    registration: Registration,
    user_scope: String,
    /// The teams whose rows this client receives.
    effective: HashSet<Uuid>,
    tables: Option<Vec<String>>,
    /// The last cursor sent (or the client's own).
    cursor: u64,
    flavor: Flavor,
    sender: mpsc::Sender<Bytes>,
    retry_sent: bool,
}

impl Connection {
    async fn run(
        mut self,
        watermark: u64,
        reset: bool,
        removed: Vec<Uuid>,
        full_resend: HashSet<Uuid>,
    ) {
        let _ = self.serve(watermark, reset, removed, full_resend).await;
    }

    async fn serve(
        &mut self,
        watermark: u64,
        reset: bool,
        removed: Vec<Uuid>,
        full_resend: HashSet<Uuid>,
    ) -> Result<(), Gone> {
        self.write(Bytes::from_static(b": \n\n")).await?;
        if reset {
            self.send(
                &Frame::Reset {
                    reason: "cursor_expired",
                }
                .to_json(),
                None,
            )
            .await?;
        }
        for team_id in removed {
            let frame = Frame::ScopeRemoved {
                scope: format!("team.{team_id}"),
                team_id: team_id.to_string(),
                cursor: self.cursor.to_string(),
            };
            self.send(&frame.to_json(), Some(self.cursor)).await?;
        }
        // Catch-up, holding one of a bounded number of permits.
        let mut scopes = vec![(self.user_scope.clone(), self.cursor)];
        for team_id in &self.effective {
            let after = if full_resend.contains(team_id) {
                0
            } else {
                self.cursor
            };
            scopes.push((format!("team.{team_id}"), after));
        }
        let catch_up = CatchUp::new(
            self.claims.user_id,
            scopes,
            watermark,
            self.state.config.chunk_rows,
            self.cursor > 0,
            self.tables.clone(),
        );
        // Boxed: the catch-up's (and the gap's) futures are large and needed once; inline,
        // every idle stream's task would keep room for them (memory per connection).
        match Box::pin(self.catch_up(catch_up, watermark)).await {
            Ok(flow) => {
                if matches!(flow, Flow::Stop) {
                    return Ok(());
                }
            }
            Err(CatchUpError::Gone) => return Err(Gone),
            Err(CatchUpError::Failed(error)) => {
                tracing::warn!(%error, "catch-up failed; closing the stream");
                return Ok(());
            }
        }
        // Between the watermark and the hub's position at registration.
        let position = self.registration.position;
        if position > self.cursor {
            let from = self.cursor + 1;
            let gap = match self.state.hub.range(from, position) {
                Some(gap) => gap,
                None => match Box::pin(hub::read_range(
                    &self.state.jetstream,
                    &self.state.changes_stream,
                    from,
                    position,
                ))
                .await
                {
                    Ok(gap) => gap,
                    Err(error) => {
                        tracing::warn!(%error, "reading the handoff gap from JetStream failed; closing");
                        return Ok(());
                    }
                },
            };
            for changeset in gap {
                if self.is_mine(&changeset)
                    && matches!(Box::pin(self.live(&changeset)).await?, Flow::Stop)
                {
                    return Ok(());
                }
            }
        }
        self.live_loop().await
    }

    /// Whether a changeset from the ring is in this client's registered scopes.
    fn is_mine(&self, changeset: &LiveChangeset) -> bool {
        changeset.scope == self.user_scope
            || changeset
                .scope
                .strip_prefix("team.")
                .and_then(|team| team.parse::<Uuid>().ok())
                .is_some_and(|team_id| self.claims.team_ids.contains(&team_id))
    }

    async fn catch_up(
        &mut self,
        mut catch_up: CatchUp,
        watermark: u64,
    ) -> Result<Flow, CatchUpError> {
        let permit = tokio::select! {
            permit = Arc::clone(&self.state.catchups).acquire_owned() => permit.map_err(|error| CatchUpError::Failed(error.to_string()))?,
            () = self.state.shutdown.cancelled() => {
                self.close(CloseReason::Shutdown).await.map_err(|Gone| CatchUpError::Gone)?;
                return Ok(Flow::Stop);
            }
        };
        let db = self.state.db.clone();
        let final_cursor = self.cursor.max(watermark);
        let mut current = catch_up
            .next_page(&db)
            .await
            .map_err(|error| CatchUpError::Failed(error.to_string()))?;
        loop {
            let next = match current {
                Some(_) => catch_up
                    .next_page(&db)
                    .await
                    .map_err(|error| CatchUpError::Failed(error.to_string()))?,
                None => None,
            };
            let last_page = next.is_none();
            match &current {
                Some(page) => self
                    .send_page(page, last_page, final_cursor)
                    .await
                    .map_err(|Gone| CatchUpError::Gone)?,
                None => {
                    let frame = Frame::Delta {
                        table: None,
                        data: Vec::new(),
                        is_last_chunk: true,
                        cursor: final_cursor.to_string(),
                    };
                    self.send(&frame.to_json(), Some(final_cursor))
                        .await
                        .map_err(|Gone| CatchUpError::Gone)?;
                }
            }
            if self.state.shutdown.is_cancelled() {
                self.close(CloseReason::Shutdown)
                    .await
                    .map_err(|Gone| CatchUpError::Gone)?;
                return Ok(Flow::Stop);
            }
            if last_page {
                break;
            }
            current = next;
        }
        drop(permit);
        self.cursor = final_cursor;
        Ok(Flow::Continue)
    }

    /// One page as `delta` frames, one per table. Only the page's last frame carries the
    /// page's cursor: a client that stops between frames resumes from the previous page.
    async fn send_page(
        &mut self,
        page: &[Row],
        last_page: bool,
        final_cursor: u64,
    ) -> Result<(), Gone> {
        let mut groups: Vec<(&str, Vec<&serde_json::value::RawValue>)> = Vec::new();
        for row in page {
            match groups.iter_mut().find(|(table, _)| *table == row.table) {
                Some((_, rows)) => rows.push(&row.data),
                None => groups.push((&row.table, vec![&row.data])),
            }
        }
        let page_cursor = page
            .iter()
            .map(|row| row.seq)
            .max()
            .unwrap_or(self.cursor)
            .max(self.cursor);
        let page_cursor = if last_page { final_cursor } else { page_cursor };
        let count = groups.len();
        for (index, (table, rows)) in groups.into_iter().enumerate() {
            let last_of_page = index + 1 == count;
            let cursor = if last_of_page {
                page_cursor
            } else {
                self.cursor
            };
            let frame = Frame::Delta {
                table: Some(table),
                data: rows,
                is_last_chunk: last_page && last_of_page,
                cursor: cursor.to_string(),
            };
            self.send(&frame.to_json(), Some(cursor)).await?;
        }
        self.cursor = page_cursor;
        Ok(())
    }

    async fn live_loop(&mut self) -> Result<(), Gone> {
        let heartbeat = self.state.config.heartbeat;
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        let expires_in = Duration::from_millis((self.claims.expires_at - now_ms()).max(0) as u64);
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        let queue = Arc::clone(&self.registration.queue);
        loop {
            tokio::select! {
                next = queue.next() => match next {
                    Next::Changesets(changesets) => {
                        for changeset in changesets {
                            if let Flow::Stop = Box::pin(self.live(&changeset)).await? {
                                return Ok(());
                            }
                        }
                        queue.sent();
                    }
                    Next::Closed(reason) => return self.close(reason).await,
                },
                _ = ticker.tick() => {
                    let frame = Frame::Heartbeat { timestamp: now_ms() };
                    self.send(&frame.to_json(), Some(self.cursor)).await?;
                }
                () = &mut expiry => return self.close(CloseReason::TokenExpired).await,
                () = self.state.shutdown.cancelled() => return self.close(CloseReason::Shutdown).await,
                () = self.sender.closed() => return Err(Gone),
            }
        }
    }

    /// One live changeset: scope checks, membership moves, the `change` frame.
    async fn live(&mut self, changeset: &LiveChangeset) -> Result<Flow, Gone> {
        if changeset.seq <= self.cursor {
            return Ok(Flow::Continue);
        }
        let mut left = Vec::new();
        if changeset.scope == self.user_scope {
            for change in changeset
                .changes
                .iter()
                .filter(|change| change.table == "team_members")
            {
                let Some((team_id, active, _)) =
                    catchup::own_membership(change.data.get(), self.claims.user_id)
                else {
                    continue;
                };
                if active && !self.effective.contains(&team_id) {
                    // Joined a team: the client needs that team's rows from the start, which
                    // a reconnect gives it once the read model has the membership.
                    self.wait_for_watermark(changeset.seq).await;
                    self.close(CloseReason::ScopesChanged).await?;
                    return Ok(Flow::Stop);
                }
                if !active && self.effective.contains(&team_id) {
                    left.push(team_id);
                }
            }
        } else if let Some(team_id) = changeset
            .scope
            .strip_prefix("team.")
            .and_then(|team| team.parse::<Uuid>().ok())
        {
            if !self.effective.contains(&team_id) {
                return Ok(Flow::Continue);
            }
        } else {
            return Ok(Flow::Continue);
        }
        // The client's own membership row is in its user scope and the team's: it goes out
        // with the user scope's changeset only, so each row version reaches the client once.
        let own_membership = changeset
            .scope
            .strip_prefix("team.")
            .map(|team_id| format!("{team_id}:{}", self.claims.user_id));
        let is_duplicate = |change: &LiveChange| {
            own_membership
                .as_deref()
                .is_some_and(|row_id| change.table == "team_members" && change.row_id == row_id)
        };
        let filtered = self.tables.is_some() || changeset.changes.iter().any(is_duplicate);
        let json = match &self.tables {
            None if !filtered => Some(changeset.full_frame()),
            tables => {
                let changes: Vec<_> = changeset
                    .changes
                    .iter()
                    .filter(|change| {
                        tables
                            .as_ref()
                            .is_none_or(|tables| tables.contains(&change.table))
                            && !is_duplicate(change)
                    })
                    .collect();
                (!changes.is_empty()).then(|| {
                    Arc::from(
                        Frame::Change {
                            cursor: changeset.seq.to_string(),
                            changes,
                        }
                        .to_json(),
                    )
                })
            }
        };
        let moves_cursor = json.is_some() || !left.is_empty();
        // A removal goes out before the changeset that carries it, with the cursor before
        // that changeset: a client cut off between the two frames resumes before the removal
        // and is told again, whereas one that had the changeset's cursor would not be.
        for team_id in left {
            self.effective.remove(&team_id);
            let frame = Frame::ScopeRemoved {
                scope: format!("team.{team_id}"),
                team_id: team_id.to_string(),
                cursor: self.cursor.to_string(),
            };
            self.send(&frame.to_json(), Some(self.cursor)).await?;
        }
        if let Some(json) = json {
            self.send(&json, Some(changeset.seq)).await?;
        }
        if moves_cursor {
            self.cursor = changeset.seq;
        }
        Ok(Flow::Continue)
    }

    async fn wait_for_watermark(&self, seq: u64) {
        for _ in 0..100 {
            let watermark: Result<Option<i64>, _> =
                sqlx::query_scalar("SELECT watermark FROM materializer_state")
                    .fetch_optional(&self.state.db)
                    .await;
            if matches!(watermark, Ok(Some(watermark)) if watermark as u64 >= seq) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn close(&mut self, reason: CloseReason) -> Result<(), Gone> {
        self.send(&Frame::Closed { reason }.to_json(), None).await?;
        if self.flavor == Flavor::Orpc {
            self.write(Bytes::from_static(b"event: done\ndata: {}\n\n"))
                .await?;
        }
        Ok(())
    }

    async fn send(&mut self, json: &str, id: Option<u64>) -> Result<(), Gone> {
        let mut event = String::with_capacity(json.len() + 64);
        if self.flavor == Flavor::Orpc {
            event.push_str("event: message\n");
        }
        if !self.retry_sent || self.flavor == Flavor::Orpc {
            event.push_str("retry: ");
            event.push_str(&self.state.config.retry_ms.to_string());
            event.push('\n');
            self.retry_sent = true;
        }
        if let Some(id) = id {
            event.push_str("id: ");
            event.push_str(&id.to_string());
            event.push('\n');
        }
        event.push_str("data: ");
        if self.flavor == Flavor::Orpc {
            event.push_str("{\"json\":");
            event.push_str(json);
            event.push('}');
        } else {
            event.push_str(json);
        }
        event.push_str("\n\n");
        self.write(Bytes::from(event)).await
    }

    async fn write(&self, bytes: Bytes) -> Result<(), Gone> {
        self.sender.send(bytes).await.map_err(|_| Gone)
    }
}

enum CatchUpError {
    Gone,
    Failed(String),
}
