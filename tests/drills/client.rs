//! An SSE client of `GET /sync/stream` that keeps a user's journal entries as an offline-first
//! app does and reconnects from its cursor (`Last-Event-ID`) whenever its stream is refused
//! or ends, as `EventSource` does. It records every session's live frames, so a drill can
//! check them against the CHANGES stream.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// One connection's frames.
#[derive(Debug, Default)]
struct Session {
    /// The cursor of the catch-up's last `delta` (`isLastChunk`): live frames follow it.
    caught_up_at: Option<u64>,
    /// The cursors of its `change` frames, in arrival order.
    changes: Vec<u64>,
    /// Why it ended; `None` while open.
    ended: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    sessions: Vec<Session>,
    cursor: u64,
    /// Journal entries: id → (version, deleted).
    entries: BTreeMap<String, (i64, bool)>,
    /// When each entry was first seen, in a change or a catch-up.
    arrivals: HashMap<String, Instant>,
    /// `table/rowId@version` of every row change received live, to find repeats.
    changes_seen: BTreeSet<String>,
    duplicates: Vec<String>,
    refusals: Vec<String>,
    /// A frame the client could not make sense of.
    broken: Vec<String>,
}

pub struct SseClient {
    pub user_id: Uuid,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for SseClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SseClient {
    pub fn spawn(streamer: &str, token: &str, user_id: Uuid) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let url = format!("{streamer}/sync/stream");
        let token = token.to_owned();
        let task = tokio::spawn({
            let state = Arc::clone(&state);
            async move {
                let http = reqwest::Client::new();
                loop {
                    let cursor = lock(&state).cursor;
                    let mut request = http.get(&url).bearer_auth(&token);
                    if cursor > 0 {
                        request = request.header("last-event-id", cursor.to_string());
                    }
                    match request.send().await {
                        Ok(response) if response.status() == 200 => {
                            read_session(response, &state).await;
                        }
                        Ok(response) => {
                            let status = response.status().as_u16();
                            lock(&state).refusals.push(status.to_string());
                        }
                        Err(_) => lock(&state).refusals.push("no answer".to_owned()),
                    }
                    // Sooner than the SSE retry hint: a drill need not wait for it.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        Self {
            user_id,
            state,
            task,
        }
    }

    /// Its latest stream has sent its whole catch-up and is open.
    pub fn caught_up(&self) -> bool {
        let state = lock(&self.state);
        state
            .sessions
            .last()
            .is_some_and(|session| session.caught_up_at.is_some() && session.ended.is_none())
    }

    pub fn cursor(&self) -> u64 {
        lock(&self.state).cursor
    }

    /// The live entries of its copy: id → version.
    pub fn entries(&self) -> BTreeMap<String, i64> {
        lock(&self.state)
            .entries
            .iter()
            .filter(|(_, (_, deleted))| !deleted)
            .map(|(id, (version, _))| (id.clone(), *version))
            .collect()
    }

    /// When entry `id` reached the client, if it has.
    pub fn arrival(&self, id: &str) -> Option<Instant> {
        lock(&self.state).arrivals.get(id).copied()
    }

    /// How many streams it has opened.
    pub fn sessions(&self) -> usize {
        lock(&self.state).sessions.len()
    }

    /// Each session's live frames are exactly the user's changesets after its catch-up, in
    /// order (the open one up to the last of them), and no row version came twice.
    pub fn assert_no_gap_and_no_duplicate(&self, in_scope: &BTreeSet<u64>) {
        let state = lock(&self.state);
        let user = self.user_id;
        assert!(state.broken.is_empty(), "user {user}: {:?}", state.broken);
        assert!(
            state.duplicates.is_empty(),
            "user {user}: row versions received twice: {:?}",
            state.duplicates
        );
        let last_in_scope = in_scope.last().copied().unwrap_or(0);
        for (index, session) in state.sessions.iter().enumerate() {
            // A stream cut before its catch-up ended has no live frames to check.
            let Some(caught_up_at) = session.caught_up_at else {
                assert!(session.changes.is_empty(), "user {user}: {session:?}");
                continue;
            };
            let until = match session.ended {
                None => last_in_scope,
                Some(_) => session.changes.last().copied().unwrap_or(caught_up_at),
            };
            let expected: Vec<u64> = in_scope
                .range(caught_up_at + 1..=until.max(caught_up_at))
                .copied()
                .collect();
            if session.changes != expected {
                let got: BTreeSet<u64> = session.changes.iter().copied().collect();
                let wanted: BTreeSet<u64> = expected.iter().copied().collect();
                let missing: Vec<u64> = wanted.difference(&got).copied().collect();
                let unexpected: Vec<u64> = got.difference(&wanted).copied().collect();
                panic!(
                    "user {user}: stream {index} (caught up at {caught_up_at}, ended {:?}) got \
                     other changes than CHANGES holds for the user: {} received, {} expected, \
                     missing {missing:?}, not in the user's scope up to {last_in_scope} \
                     {unexpected:?}, in order: {}",
                    session.ended,
                    session.changes.len(),
                    expected.len(),
                    session.changes.is_sorted()
                );
            }
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding it is in this file's code; the data is still what was recorded.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Read one stream until it ends (or is silent for 10 s: heartbeats come every second).
async fn read_session(response: reqwest::Response, state: &Mutex<State>) {
    lock(state).sessions.push(Session::default());
    let mut body = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    let ended = loop {
        while let Some(end) = buffer.windows(2).position(|pair| pair == b"\n\n") {
            let event: Vec<u8> = buffer.drain(..end + 2).collect();
            apply(&String::from_utf8_lossy(&event), &mut lock(state));
        }
        match tokio::time::timeout(Duration::from_secs(10), body.next()).await {
            Ok(Some(Ok(chunk))) => buffer.extend_from_slice(&chunk),
            Ok(Some(Err(_))) => break "cut",
            Ok(None) => break "eof",
            Err(_) => break "silent",
        }
    };
    let mut state = lock(state);
    if let Some(session) = state.sessions.last_mut() {
        session.ended.get_or_insert_with(|| ended.to_owned());
    }
}

/// Apply one SSE event (`id:` and `data:` lines).
fn apply(event: &str, state: &mut State) {
    let mut id = None;
    let mut data = String::new();
    for line in event.lines() {
        if let Some(value) = line.strip_prefix("id:") {
            id = value.trim().parse::<u64>().ok();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push_str(value.trim_start());
        }
    }
    if data.is_empty() {
        return; // a comment or a bare retry hint
    }
    let Ok(frame) = serde_json::from_str::<Value>(&data) else {
        state.broken.push(format!("not JSON: {data}"));
        return;
    };
    if let Some(cursor) = id {
        if cursor < state.cursor {
            state.broken.push(format!(
                "cursor went back from {} to {cursor}",
                state.cursor
            ));
        }
        state.cursor = cursor;
    }
    let now = Instant::now();
    match frame["type"].as_str() {
        Some("delta") => {
            if frame["table"] == "journal_entries" {
                for row in frame["data"].as_array().into_iter().flatten() {
                    upsert_entry(state, row, now);
                }
            }
            if frame["isLastChunk"] == true
                && let Some(session) = state.sessions.last_mut()
            {
                session.caught_up_at = Some(id.unwrap_or(0));
            }
        }
        Some("change") => {
            let Some(cursor) = id else {
                state
                    .broken
                    .push(format!("a change without a cursor: {frame}"));
                return;
            };
            match state.sessions.last_mut() {
                Some(session) if session.caught_up_at.is_some() => session.changes.push(cursor),
                _ => state
                    .broken
                    .push(format!("a change before the catch-up ended: {frame}")),
            }
            for change in frame["changes"].as_array().into_iter().flatten() {
                let key = format!(
                    "{}/{}@{}",
                    change["table"].as_str().unwrap_or("?"),
                    change["rowId"].as_str().unwrap_or("?"),
                    change["version"]
                );
                if !state.changes_seen.insert(key.clone()) {
                    state.duplicates.push(key);
                }
                if change["table"] == "journal_entries" {
                    upsert_entry(state, &change["data"], now);
                }
            }
        }
        Some("reset") => state.entries.clear(),
        Some("closed") => {
            let reason = format!("closed: {}", frame["reason"]);
            if let Some(session) = state.sessions.last_mut() {
                session.ended = Some(reason);
            }
        }
        _ => {}
    }
}

fn upsert_entry(state: &mut State, row: &Value, now: Instant) {
    let (Some(id), Some(version)) = (row["journalEntryId"].as_str(), row["version"].as_i64())
    else {
        state
            .broken
            .push(format!("an entry without id or version: {row}"));
        return;
    };
    state.arrivals.entry(id.to_owned()).or_insert(now);
    let deleted = !row["deletedAt"].is_null();
    let newer = state
        .entries
        .get(id)
        .is_none_or(|(current, _)| *current <= version);
    if newer {
        state.entries.insert(id.to_owned(), (version, deleted));
    }
}
