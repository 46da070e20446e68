//! An offline-first SSE client that reconnects from its cursor, and what it received.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use test_support::get;
use tokio::task::JoinHandle;

use crate::common::*;

/// What one SSE connection delivered.
#[derive(Debug, Default, Clone)]
pub(crate) struct Session {
    /// The cursor of the catch-up's last `delta` (`isLastChunk`): live frames start after it.
    pub(crate) caught_up_at: Option<u64>,
    /// The cursors of the `change` frames, in arrival order.
    pub(crate) changes: Vec<u64>,
    /// How it ended (`None` while open): `closed:<reason>` or `eof`.
    pub(crate) ended: Option<String>,
}

/// A client's state, shared with the task that reads its stream.
#[derive(Debug, Default)]
pub(crate) struct ClientLog {
    pub(crate) copy: LocalCopy,
    pub(crate) sessions: Vec<Session>,
    /// Stream requests refused: (status, code).
    pub(crate) refusals: Vec<(u16, String)>,
}

/// An offline-first client: one local copy fed by SSE; with `reconnect`, it opens a new
/// stream from its cursor (`Last-Event-ID`) whenever one is refused or ends, as
/// `EventSource` does.
pub(crate) struct Client {
    pub(crate) log: Arc<Mutex<ClientLog>>,
    pub(crate) task: JoinHandle<()>,
}

impl Client {
    pub(crate) fn spawn(
        base_url: &str,
        token: &str,
        log: Arc<Mutex<ClientLog>>,
        reconnect: bool,
        name: &'static str,
    ) -> Self {
        let url = format!("{base_url}/sync/stream");
        let token = token.to_owned();
        let task = tokio::spawn({
            let log = Arc::clone(&log);
            async move {
                loop {
                    let cursor = log.lock().unwrap().copy.cursor;
                    let mut request = reqwest::Client::new().get(&url).bearer_auth(&token);
                    if let Some(cursor) = cursor {
                        request = request.header("last-event-id", cursor.to_string());
                    }
                    match Sse::try_open(request).await {
                        Ok(sse) if sse.status == 200 => {
                            read_session(sse, &log, name).await;
                        }
                        Ok(refused) => {
                            let code = refused
                                .error
                                .as_ref()
                                .and_then(|error| error["code"].as_str())
                                .unwrap_or("")
                                .to_owned();
                            eprintln!("{name}: stream refused: {} {code}", refused.status);
                            log.lock().unwrap().refusals.push((refused.status, code));
                        }
                        Err(error) => panic!("{name}: the streamer did not answer: {error}"),
                    }
                    if !reconnect {
                        return;
                    }
                    // About the SSE retry hint (2 s by default; a test need not wait that long).
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        });
        Self { log, task }
    }

    /// Drop the connection (the task and its open response).
    pub(crate) async fn disconnect(self) -> Arc<Mutex<ClientLog>> {
        self.task.abort();
        let _ = self.task.await;
        if let Some(session) = self.log.lock().unwrap().sessions.last_mut() {
            session
                .ended
                .get_or_insert_with(|| "disconnected".to_owned());
        }
        self.log
    }

    pub(crate) fn heartbeats(&self) -> usize {
        let log = self.log.lock().unwrap();
        log.copy.kinds.get("heartbeat").copied().unwrap_or(0)
    }

    /// Whether the client's latest stream has sent its whole catch-up.
    pub(crate) fn caught_up(&self) -> bool {
        let log = self.log.lock().unwrap();
        log.sessions
            .last()
            .is_some_and(|session| session.caught_up_at.is_some() && session.ended.is_none())
    }

    pub(crate) fn live(&self) -> std::collections::BTreeMap<String, i64> {
        self.log.lock().unwrap().copy.live()
    }

    /// Fail at once (with the task's panic) if the reader stopped.
    pub(crate) async fn assert_reading(&mut self, name: &str) {
        if self.task.is_finished() {
            let outcome = (&mut self.task).await;
            panic!("{name}'s stream reader stopped: {outcome:?}");
        }
    }
}

async fn read_session(mut sse: Sse, log: &Mutex<ClientLog>, name: &str) {
    log.lock().unwrap().sessions.push(Session::default());
    loop {
        // A heartbeat comes every second: a long silence ends the session.
        let Some(event) = sse.next(Duration::from_secs(30)).await else {
            let mut log = log.lock().unwrap();
            let session = log.sessions.last_mut().unwrap();
            session.ended.get_or_insert_with(|| "eof".to_owned());
            eprintln!("{name}: stream ended ({:?})", session.ended);
            return;
        };
        let mut log = log.lock().unwrap();
        let kind = log.copy.apply(&event);
        let cursor = event.id.as_deref().map(through);
        let session = log.sessions.last_mut().unwrap();
        match kind.as_str() {
            "delta" if event.data["isLastChunk"] == true => session.caught_up_at = cursor,
            "change" => {
                assert!(
                    session.caught_up_at.is_some(),
                    "{name}: a change before the catch-up ended"
                );
                session.changes.push(cursor.unwrap());
            }
            "closed" => {
                session.ended = Some(format!("closed:{}", event.data["reason"]));
            }
            _ => {}
        }
    }
}

/// The streamer's `/readyz` status and body.
pub(crate) async fn readyz(streamer: &Streamer) -> (u16, String) {
    get(&format!("{}/readyz", streamer.base_url)).await
}
