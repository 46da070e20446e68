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
use std::hash::{DefaultHasher, Hash, Hasher};
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
use sync_protocol::changes::Scope;
use sync_protocol::cursor::{Cursor, MAX_SENT_PAST};
use sync_protocol::tables;
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

    let token_teams: HashSet<Uuid> = claims.team_ids.iter().copied().collect();
    let mut effective = HashSet::new();
    let mut removed = Vec::new();
    let mut full_resend = HashSet::new();
    let mut since = since;
    let reset = since.highest() > 0 && since.through() < snapshot.horizon;
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
            if since.highest() > 0 {
                removed.push(membership.team_id);
            }
        } else if since.highest() > 0 && !since.holds(membership.seq) {
            removed.push(membership.team_id);
        }
    }
    // A team sent again from its start: the client may hold rows of it (it was removed and
    // re-added while away, or its role changed); it drops them first, so every row version
    // it then gets is new to it.
    if since.highest() > 0 {
        removed.extend(full_resend.iter().copied());
    }
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
    /// The last cursor sent (or the client's own): what the client holds.
    cursor: Cursor,
    /// The highest sequence taken from the handoff gap or the queue: where the cursor goes
    /// once no transaction waits for parts.
    taken: u64,
    /// Transactions waiting for more of the parts the client follows, oldest first.
    assembling: Vec<Assembly>,
    /// Transactions recently sent (whole or not): a late part of one goes out alone at once.
    finished: VecDeque<String>,
    /// Row versions recently sent live: none goes out twice.
    sent_versions: RecentVersions,
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
            let cursor = self.cursor.to_string();
            let frame = Frame::ScopeRemoved {
                scope: Scope::Team(team_id).key(),
                team_id: team_id.to_string(),
                cursor: cursor.clone(),
            };
            self.send(&frame.to_json(), Some(&cursor)).await?;
        }
        // Catch-up, holding one of a bounded number of permits.
        let mut scopes = vec![(self.user_scope.clone(), self.cursor.clone())];
        for team_id in &self.effective {
            let after = if full_resend.contains(team_id) {
                Cursor::default()
            } else {
                self.cursor.clone()
            };
            scopes.push((Scope::Team(*team_id).key(), after));
        }
        let catch_up = CatchUp::new(
            scopes,
            watermark,
            self.state.config.chunk_rows,
            self.cursor.highest() > 0,
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
        if position > self.cursor.through() {
            let from = self.cursor.through() + 1;
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
                if matches!(Box::pin(self.take(changeset)).await?, Flow::Stop) {
                    return Ok(());
                }
            }
        }
        self.live_loop().await
    }

    /// Whether `scope` is one this client registered for (its own, its token's teams): the
    /// hub hands it that scope's changesets.
    fn follows(&self, scope: &str) -> bool {
        scope == self.user_scope
            || matches!(Scope::parse(scope), Some(Scope::Team(team_id)) if self.claims.team_ids.contains(&team_id))
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
        let final_cursor = self.cursor.advanced(watermark);
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
                    .send_page(page, last_page, &final_cursor)
                    .await
                    .map_err(|Gone| CatchUpError::Gone)?,
                None => {
                    let frame = Frame::Delta {
                        table: None,
                        data: Vec::new(),
                        is_last_chunk: true,
                        cursor: final_cursor.to_string(),
                    };
                    self.send(&frame.to_json(), Some(&final_cursor.to_string()))
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
        self.taken = self.taken.max(final_cursor.through());
        self.cursor = final_cursor;
        Ok(Flow::Continue)
    }

    /// One page as `delta` frames, one per table. Only the page's last frame carries the
    /// page's cursor: a client that stops between frames resumes from the previous page.
    async fn send_page(
        &mut self,
        page: &[Row],
        last_page: bool,
        final_cursor: &Cursor,
    ) -> Result<(), Gone> {
        let mut groups: Vec<(&str, Vec<&serde_json::value::RawValue>)> = Vec::new();
        for row in page {
            match groups.iter_mut().find(|(table, _)| *table == row.table) {
                Some((_, rows)) => rows.push(&row.data),
                None => groups.push((&row.table, vec![&row.data])),
            }
        }
        let page_cursor = if last_page {
            final_cursor.clone()
        } else {
            let page_end = page.iter().map(|row| row.seq).max().unwrap_or_default();
            self.cursor.advanced(page_end)
        };
        let count = groups.len();
        for (index, (table, rows)) in groups.into_iter().enumerate() {
            let last_of_page = index + 1 == count;
            let cursor = if last_of_page {
                page_cursor.to_string()
            } else {
                self.cursor.to_string()
            };
            let frame = Frame::Delta {
                table: Some(table),
                data: rows,
                is_last_chunk: last_page && last_of_page,
                cursor: cursor.clone(),
            };
            self.send(&frame.to_json(), Some(&cursor)).await?;
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
            // The oldest waiting transaction goes out as far as it got when its wait ends.
            let waiting_until = self.assembling.first().map(|assembly| assembly.deadline);
            let waited = async move {
                match waiting_until {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                next = queue.next() => match next {
                    Next::Changesets(changesets) => {
                        for changeset in changesets {
                            if let Flow::Stop = Box::pin(self.take(changeset)).await? {
                                return Ok(());
                            }
                        }
                        queue.sent();
                    }
                    Next::Closed(reason) => return self.close(reason).await,
                },
                () = waited => {
                    if let Flow::Stop = self.give_up_oldest_wait("did not arrive in time").await? {
                        return Ok(());
                    }
                }
                _ = ticker.tick() => {
                    let frame = Frame::Heartbeat { timestamp: now_ms() };
                    let cursor = self.cursor.to_string();
                    self.send(&frame.to_json(), Some(&cursor)).await?;
                }
                () = &mut expiry => return self.close(CloseReason::TokenExpired).await,
                () = self.state.shutdown.cancelled() => return self.close(CloseReason::Shutdown).await,
                () = self.sender.closed() => return Err(Gone),
            }
        }
    }

    /// One changeset from the handoff gap or the queue, in stream order: sent with the rest of
    /// its transaction once the parts the client follows are all in.
    async fn take(&mut self, changeset: Arc<LiveChangeset>) -> Result<Flow, Gone> {
        if changeset.seq <= self.taken || !self.follows(&changeset.scope) {
            return Ok(Flow::Continue);
        }
        self.taken = changeset.seq;
        if self.cursor.holds(changeset.seq) {
            // Sent on an earlier connection, past a transaction that was waiting then.
            return Ok(Flow::Continue);
        }
        // The cursor lists what went out past a waiting transaction: past a bound, the oldest
        // waiting transaction goes out as far as it got, so the cursor stays short.
        while self.cursor.listed().len() >= MAX_SENT_PAST && !self.assembling.is_empty() {
            if let Flow::Stop = self.give_up_oldest_wait("held too much up").await? {
                return Ok(Flow::Stop);
            }
        }
        let Some(part) = changeset.transaction.clone() else {
            return self.deliver("", vec![changeset]).await;
        };
        let expected: Vec<usize> = part
            .scopes
            .iter()
            .enumerate()
            .filter(|(_, scope)| self.follows(scope))
            .map(|(index, _)| index)
            .collect();
        if expected.len() <= 1 || self.finished.contains(&part.id) {
            return self.deliver(&part.id, vec![changeset]).await;
        }
        let position = match self
            .assembling
            .iter()
            .position(|assembly| assembly.id == part.id)
        {
            Some(position) => position,
            None => {
                self.assembling.push(Assembly {
                    id: part.id.clone(),
                    expected,
                    parts: Vec::new(),
                    deadline: tokio::time::Instant::now() + self.state.config.transaction_wait,
                });
                self.assembling.len() - 1
            }
        };
        let assembly = &mut self.assembling[position];
        assembly.parts.push(changeset);
        let complete = assembly.expected.iter().all(|index| {
            assembly.parts.iter().any(|part| {
                part.transaction
                    .as_ref()
                    .is_some_and(|transaction| transaction.index == *index)
            })
        });
        if !complete {
            return Ok(Flow::Continue);
        }
        let assembly = self.assembling.remove(position);
        self.deliver(&assembly.id, assembly.parts).await
    }

    /// Stop waiting for the oldest waiting transaction: it goes out with the parts it has.
    async fn give_up_oldest_wait(&mut self, why: &'static str) -> Result<Flow, Gone> {
        if self.assembling.is_empty() {
            return Ok(Flow::Continue);
        }
        let assembly = self.assembling.remove(0);
        tracing::debug!(
            transaction = %assembly.id,
            why,
            "sending a transaction without the parts still missing"
        );
        metrics::counter!("sync_stream_split_transactions_total").increment(1);
        Box::pin(self.deliver(&assembly.id, assembly.parts)).await
    }

    /// One transaction's parts (those the client follows that arrived): membership moves, then
    /// one `change` frame with each row version once.
    async fn deliver(
        &mut self,
        transaction_id: &str,
        parts: Vec<Arc<LiveChangeset>>,
    ) -> Result<Flow, Gone> {
        if !transaction_id.is_empty() {
            if self.finished.len() >= FINISHED_MEMORY {
                self.finished.pop_front();
            }
            self.finished.push_back(transaction_id.to_owned());
        }
        let last_seq = parts
            .iter()
            .map(|part| part.seq)
            .max()
            .unwrap_or(self.taken);
        // The client's own membership is in its scope and the team's: either part tells (a
        // part that came alone after the wait as well).
        let mut left = Vec::new();
        for part in &parts {
            for change in part
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
                    self.wait_for_watermark(last_seq).await;
                    self.close(CloseReason::ScopesChanged).await?;
                    return Ok(Flow::Stop);
                }
                if !active && self.effective.contains(&team_id) && !left.contains(&team_id) {
                    left.push(team_id);
                }
            }
        }
        for team_id in &left {
            self.effective.remove(team_id);
        }
        // The cursor: everything up to the first part still waiting (or everything taken),
        // and this transaction's parts (with any others sent past a waiting one). A client
        // resuming from it gets every waiting transaction whole and these parts never again.
        let before = self.cursor.to_string();
        for part in &parts {
            self.cursor.add(part.seq);
        }
        let through = self
            .assembling
            .iter()
            .flat_map(|assembly| assembly.parts.iter().map(|part| part.seq))
            .min()
            .map_or(self.taken, |first_waiting| first_waiting - 1);
        self.cursor.advance(through);
        let cursor = self.cursor.to_string();
        let visible: Vec<&LiveChangeset> = parts
            .iter()
            .map(Arc::as_ref)
            .filter(|part| {
                part.scope == self.user_scope
                    || matches!(Scope::parse(&part.scope), Some(Scope::Team(team_id)) if self.effective.contains(&team_id))
            })
            .collect();
        let mut in_frame = HashSet::new();
        let mut changes: Vec<&LiveChange> = Vec::new();
        let mut whole = true;
        for part in &visible {
            for change in &part.changes {
                let wanted = self
                    .tables
                    .as_ref()
                    .is_none_or(|tables| tables.contains(&change.table));
                let key = version_key(change);
                if wanted && in_frame.insert(key) && !self.sent_versions.contains(key) {
                    changes.push(change);
                } else {
                    whole = false;
                }
            }
        }
        let plain = self.cursor.listed().is_empty();
        let json = match (visible.as_slice(), whole) {
            // One changeset sent as is: its frame is shared by every client that sees it.
            ([only], true) if plain && only.seq == self.cursor.through() => Some(only.full_frame()),
            _ => (!changes.is_empty()).then(|| {
                Arc::from(
                    Frame::Change {
                        cursor: cursor.clone(),
                        changes: changes.clone(),
                    }
                    .to_json(),
                )
            }),
        };
        for change in &changes {
            self.sent_versions.insert(version_key(change));
        }
        // A removal goes out before the changeset that carries it, with the cursor before
        // that changeset: a client cut off between the two frames resumes before the removal
        // and is told again, whereas one that had the changeset's cursor would not be.
        for team_id in left {
            let frame = Frame::ScopeRemoved {
                scope: Scope::Team(team_id).key(),
                team_id: team_id.to_string(),
                cursor: before.clone(),
            };
            self.send(&frame.to_json(), Some(&before)).await?;
        }
        // Nothing for the client: the cursor moved all the same; the next frame or heartbeat
        // carries it.
        if let Some(json) = json {
            self.send(&json, Some(&cursor)).await?;
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

    async fn send(&mut self, json: &str, id: Option<&str>) -> Result<(), Gone> {
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
            event.push_str(id);
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

/// How many transaction ids a stream remembers as sent.
const FINISHED_MEMORY: usize = 256;
/// How many row versions a stream remembers as sent live.
const SENT_VERSIONS_MEMORY: usize = 4096;

/// A transaction some of whose parts the client follows have arrived, not all.
struct Assembly {
    id: String,
    /// The part indexes the client follows.
    expected: Vec<usize>,
    parts: Vec<Arc<LiveChangeset>>,
    /// When it goes out with what it has.
    deadline: tokio::time::Instant,
}

/// A row version's key: a hash of (table, row id, version).
fn version_key(change: &LiveChange) -> u64 {
    let mut hasher = DefaultHasher::new();
    (&change.table, &change.row_id, change.version).hash(&mut hasher);
    hasher.finish()
}

/// The last [`SENT_VERSIONS_MEMORY`] row versions sent.
#[derive(Default)]
struct RecentVersions {
    keys: HashSet<u64>,
    order: VecDeque<u64>,
}

impl RecentVersions {
    fn contains(&self, key: u64) -> bool {
        self.keys.contains(&key)
    }

    fn insert(&mut self, key: u64) {
        if !self.keys.insert(key) {
            return;
        }
        if self.order.len() >= SENT_VERSIONS_MEMORY
            && let Some(oldest) = self.order.pop_front()
        {
            self.keys.remove(&oldest);
        }
        self.order.push_back(key);
    }
}
