//! The api and sync-streamer replicas in-process on one fresh database and bus namespace, and
//! an SSE client that keeps a local copy the way an offline-first app does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

#[path = "../../../api/tests/common/mod.rs"]
pub mod api_common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use sync_streamer::materializer::Leadership;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use api_common::{TestApi, TestUser};

/// One streamer replica.
pub struct Streamer {
    pub base_url: String,
    pub leadership: Leadership,
    pub hub: sync_streamer::hub::Hub,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), sync_streamer::Error>>,
    background: Vec<tokio::task::AbortHandle>,
    /// The CHANGES tail's task (also in `background`).
    pub tail: tokio::task::AbortHandle,
}

impl Streamer {
    pub async fn start(api: &TestApi, configure: impl FnOnce(&mut sync_streamer::Config)) -> Self {
        let mut config = sync_streamer::Config::for_tests(api.db.url(), &test_support::nats_url());
        config.common.bus_namespace = api.namespace.clone();
        config.sync.heartbeat = Duration::from_secs(1);
        configure(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let service = sync_streamer::Service::start(config, listener, shutdown.clone())
            .await
            .unwrap();
        let leadership = service.leadership();
        let hub = service.hub();
        let background = service.abort_handles();
        let tail = service.tail_abort_handle();
        let handle = tokio::spawn(service.serve());
        test_support::wait_ready(&base_url, "the streamer").await;
        Self {
            base_url,
            leadership,
            hub,
            shutdown,
            handle,
            background,
            tail,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        test_support::assert_stops_ok("the streamer", Duration::from_secs(15), self.handle).await;
    }

    /// Kill it abruptly: the task is aborted, so it neither hands the lease over nor closes
    /// its streams cleanly (as when a process dies).
    pub fn kill(self) {
        for task in &self.background {
            task.abort();
        }
        self.handle.abort();
    }
}

/// A sync token from the api's `sync.token`.
pub async fn sync_token(api: &TestApi, user: &TestUser) -> String {
    let output = api.call(Some(user), "sync/token", Value::Null).await.ok();
    output["token"].as_str().unwrap().to_owned()
}

/// The api's relay has published everything and the materializer has applied it.
pub async fn settle(api: &TestApi) {
    let settled = test_support::eventually(Duration::from_secs(30), || async {
        let unsent: i64 =
            sqlx::query_scalar("SELECT count(*) FROM api.outbox WHERE sent_at IS NULL")
                .fetch_one(&api.pool)
                .await
                .unwrap();
        if unsent > 0 {
            return false;
        }
        let last = last_change_seq(api).await;
        let watermark: Option<i64> =
            sqlx::query_scalar("SELECT watermark FROM sync.materializer_state")
                .fetch_optional(&api.pool)
                .await
                .unwrap();
        watermark.unwrap_or(0) as u64 >= last
    })
    .await;
    assert!(settled, "the outbox and the materializer did not settle");
}

/// The CHANGES stream's last sequence.
pub async fn last_change_seq(api: &TestApi) -> u64 {
    let client = async_nats::connect(test_support::nats_url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream
        .get_stream(format!("{}_CHANGES", api.namespace.to_ascii_uppercase()))
        .await
        .unwrap();
    stream.get_info().await.unwrap().state.last_sequence
}

/// One SSE event.
#[derive(Debug, Clone)]
pub struct Event {
    pub event: Option<String>,
    pub id: Option<String>,
    pub retry: Option<u64>,
    pub data: Value,
}

/// An open SSE response, read event by event.
pub struct Sse {
    pub status: u16,
    body: Option<futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>>,
    /// Bytes received and not yet parsed (a chunk may end inside a character).
    buffer: Vec<u8>,
    pub error: Option<Value>,
}

impl Sse {
    pub async fn open(request: reqwest::RequestBuilder) -> Self {
        Self::try_open(request).await.unwrap()
    }

    /// Like [`Sse::open`], but a request that fails (e.g. the server was just stopped) is an
    /// error rather than a panic.
    pub async fn try_open(request: reqwest::RequestBuilder) -> reqwest::Result<Self> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        if status != 200 {
            let error = response.json().await.ok();
            return Ok(Self {
                status,
                body: None,
                buffer: Vec::new(),
                error,
            });
        }
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "SSE content type"
        );
        Ok(Self {
            status,
            body: Some(response.bytes_stream().boxed()),
            buffer: Vec::new(),
            error: None,
        })
    }

    /// The next event (comments skipped); `None` when the stream ended or `timeout` passed.
    pub async fn next(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.windows(2).position(|pair| pair == b"\n\n") {
                let raw_bytes: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let raw = String::from_utf8(raw_bytes).unwrap();
                let mut event = Event {
                    event: None,
                    id: None,
                    retry: None,
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in raw.lines() {
                    if let Some(value) = line.strip_prefix("data: ") {
                        data.push_str(value);
                    } else if let Some(value) = line.strip_prefix("id: ") {
                        event.id = Some(value.to_owned());
                    } else if let Some(value) = line.strip_prefix("event: ") {
                        event.event = Some(value.to_owned());
                    } else if let Some(value) = line.strip_prefix("retry: ") {
                        event.retry = value.parse().ok();
                    }
                }
                if data.is_empty() {
                    continue; // a comment
                }
                event.data = serde_json::from_str(&data).unwrap();
                return Some(event);
            }
            let body = self.body.as_mut()?;
            let chunk = tokio::time::timeout_at(deadline, body.next())
                .await
                .ok()??;
            let Ok(chunk) = chunk else { return None };
            self.buffer.extend_from_slice(&chunk);
        }
    }
}

/// `GET /sync/stream` with a bearer token.
pub async fn open_stream(base_url: &str, token: &str, since: Option<&str>) -> Sse {
    try_open_stream(base_url, token, since).await.unwrap()
}

/// [`open_stream`] that returns a failed request (a replica that was just stopped) as an error.
pub async fn try_open_stream(
    base_url: &str,
    token: &str,
    since: Option<&str>,
) -> reqwest::Result<Sse> {
    let mut url = format!("{base_url}/sync/stream");
    if let Some(since) = since {
        url.push_str(&format!("?since={since}"));
    }
    Sse::try_open(reqwest::Client::new().get(url).bearer_auth(token)).await
}

/// The sequence up to which a cursor (a frame's `id`) holds everything.
pub fn through(id: &str) -> u64 {
    sync_protocol::cursor::Cursor::parse(id)
        .unwrap_or_else(|error| panic!("`{id}` is not a cursor: {error}"))
        .through()
}

/// The key of a synced row from its data.
pub fn row_key(table: &str, data: &Value) -> String {
    let id = match table {
        "journal_entries" => data["journalEntryId"].as_str().unwrap().to_owned(),
        "prompts" => data["promptId"].as_str().unwrap().to_owned(),
        "teams" => data["teamId"].as_str().unwrap().to_owned(),
        "team_members" => format!(
            "{}:{}",
            data["teamId"].as_str().unwrap(),
            data["userId"].as_str().unwrap()
        ),
        "users" => data["userId"].as_str().unwrap().to_owned(),
        other => panic!("unknown table {other}"),
    };
    format!("{table}/{id}")
}

/// A client's local copy, built from frames as an app would.
#[derive(Debug, Default, Clone)]
pub struct LocalCopy {
    pub rows: BTreeMap<String, Value>,
    /// The sequence up to which the copy holds everything (the cursor's first number).
    pub cursor: Option<u64>,
    /// The last cursor received, as sent: what the client resumes from.
    pub position: Option<String>,
    pub caught_up: bool,
    /// Every cursor seen, in order (they must never decrease).
    pub cursors: Vec<u64>,
    pub closed: Option<String>,
    pub frames: usize,
    /// Frames seen by type (`closed:<reason>` for closes).
    pub kinds: BTreeMap<String, usize>,
    /// Every row version received (`delta` and `change`), in order: key → versions.
    pub received: BTreeMap<String, Vec<i64>>,
}

impl LocalCopy {
    /// Apply one event; returns its frame type.
    pub fn apply(&mut self, event: &Event) -> String {
        let frame = &event.data;
        let kind = frame["type"].as_str().unwrap().to_owned();
        self.frames += 1;
        let counted = match kind.as_str() {
            "closed" => format!("closed:{}", frame["reason"].as_str().unwrap_or("")),
            other => other.to_owned(),
        };
        *self.kinds.entry(counted).or_default() += 1;
        if let Some(id) = &event.id {
            let cursor = through(id);
            if let Some(previous) = self.cursors.last() {
                assert!(
                    cursor >= *previous,
                    "cursor went back from {previous} to {cursor}"
                );
            }
            self.cursors.push(cursor);
            self.cursor = Some(cursor);
            self.position = Some(id.clone());
        }
        match kind.as_str() {
            "delta" => {
                let table = frame["table"].as_str();
                for row in frame["data"].as_array().unwrap() {
                    self.upsert(table.unwrap(), row);
                }
                if frame["isLastChunk"] == true {
                    self.caught_up = true;
                }
            }
            "change" => {
                for change in frame["changes"].as_array().unwrap() {
                    self.upsert(change["table"].as_str().unwrap(), &change["data"]);
                }
            }
            "scope_removed" => {
                let team_id = frame["teamId"].as_str().unwrap().to_owned();
                self.rows
                    .retain(|_, row| row["teamId"].as_str() != Some(team_id.as_str()));
            }
            "reset" => {
                self.rows.clear();
                self.caught_up = false;
            }
            "closed" => self.closed = Some(frame["reason"].as_str().unwrap().to_owned()),
            _ => {}
        }
        kind
    }

    fn upsert(&mut self, table: &str, data: &Value) {
        let key = row_key(table, data);
        self.received
            .entry(key.clone())
            .or_default()
            .push(data["version"].as_i64().unwrap_or_default());
        let newer = self
            .rows
            .get(&key)
            .is_none_or(|current| current["version"].as_i64() <= data["version"].as_i64());
        if newer {
            self.rows.insert(key, data.clone());
        }
    }

    /// Live rows: key → version.
    pub fn live(&self) -> BTreeMap<String, i64> {
        self.rows
            .iter()
            .filter(|(_, row)| row["deletedAt"].is_null())
            .map(|(key, row)| (key.clone(), row["version"].as_i64().unwrap()))
            .collect()
    }
}

/// What `user` should hold: the live rows of their scopes in the api's database (key → version).
/// Their teams come from a query written here from the rule (a live membership row in a live
/// team), not from the api's own SQL, so a membership bug in the api cannot agree with itself.
pub async fn expected_rows(api: &TestApi, user_id: uuid::Uuid) -> BTreeMap<String, i64> {
    let teams = member_teams(api, user_id).await;
    expected_rows_in(api, user_id, &teams).await
}

/// The live teams `user_id` has a live membership row in, per the database.
pub async fn member_teams(api: &TestApi, user_id: uuid::Uuid) -> Vec<uuid::Uuid> {
    sqlx::query_scalar(
        "SELECT team_id FROM teams WHERE deleted_at IS NULL AND EXISTS (
             SELECT 1 FROM team_members
             WHERE team_members.team_id = teams.team_id AND team_members.user_id = $1
               AND team_members.deleted_at IS NULL)
         ORDER BY team_id",
    )
    .bind(user_id)
    .fetch_all(&api.pool)
    .await
    .unwrap()
}

/// What `user` should hold when they belong to exactly `teams`.
pub async fn expected_rows_in(
    api: &TestApi,
    user_id: uuid::Uuid,
    teams: &[uuid::Uuid],
) -> BTreeMap<String, i64> {
    let mut expected = BTreeMap::new();
    let entries: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT journal_entry_id, version FROM journal_entries WHERE deleted_at IS NULL
         AND ((team_id IS NULL AND author_user_id = $1) OR team_id = ANY($2))",
    )
    .bind(user_id)
    .bind(teams)
    .fetch_all(&api.pool)
    .await
    .unwrap();
    for (id, version) in entries {
        expected.insert(format!("journal_entries/{id}"), version);
    }
    let prompts: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT prompt_id, version FROM prompts WHERE deleted_at IS NULL
         AND (owner_user_id = $1 OR team_id = ANY($2))",
    )
    .bind(user_id)
    .bind(teams)
    .fetch_all(&api.pool)
    .await
    .unwrap();
    for (id, version) in prompts {
        expected.insert(format!("prompts/{id}"), version);
    }
    let team_rows: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT team_id, version FROM teams WHERE team_id = ANY($1) AND deleted_at IS NULL",
    )
    .bind(teams)
    .fetch_all(&api.pool)
    .await
    .unwrap();
    for (id, version) in team_rows {
        expected.insert(format!("teams/{id}"), version);
    }
    let members: Vec<(uuid::Uuid, uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT team_id, user_id, version FROM team_members WHERE deleted_at IS NULL
         AND team_id = ANY($1)",
    )
    .bind(teams)
    .fetch_all(&api.pool)
    .await
    .unwrap();
    for (team_id, member_id, version) in members {
        expected.insert(format!("team_members/{team_id}:{member_id}"), version);
    }
    let users: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT user_id, version FROM users WHERE user_id = $1 AND deleted_at IS NULL",
    )
    .bind(user_id)
    .fetch_all(&api.pool)
    .await
    .unwrap();
    for (id, version) in users {
        expected.insert(format!("users/{id}"), version);
    }
    expected
}

/// Read events into `copy` until the stream has been quiet for `quiet` after catching up
/// (or ended); returns the frame types seen.
pub async fn drain(sse: &mut Sse, copy: &mut LocalCopy, quiet: Duration) -> Vec<String> {
    let mut kinds = Vec::new();
    // Heartbeats do not count as activity.
    let mut quiet_until = tokio::time::Instant::now() + quiet;
    loop {
        let wait = if copy.caught_up {
            quiet_until.saturating_duration_since(tokio::time::Instant::now())
        } else {
            Duration::from_secs(20)
        };
        let Some(event) = sse.next(wait).await else {
            return kinds;
        };
        let kind = copy.apply(&event);
        if std::env::var_os("SYNC_TEST_TRACE").is_some() {
            eprintln!("frame {:?} {}", event.id, event.data);
        }
        let closed = kind == "closed";
        if kind != "heartbeat" {
            kinds.push(kind);
            quiet_until = tokio::time::Instant::now() + quiet;
        }
        if closed {
            return kinds;
        }
    }
}

pub fn entry(title: &str) -> Value {
    json!({"title": title, "content": "synced"})
}

pub fn unique_email(name: &str) -> String {
    format!("{name}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Seen ids of a set of frames' changes (for duplicate checks).
pub fn ids(copy: &LocalCopy) -> HashSet<String> {
    copy.rows.keys().cloned().collect()
}

impl Streamer {
    /// Whether the service and every one of its background tasks still run (none returned,
    /// panicked or was aborted).
    pub fn is_running(&self) -> bool {
        !self.handle.is_finished() && self.background.iter().all(|task| !task.is_finished())
    }
}
