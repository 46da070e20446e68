//! Faults under the streamer (issue 20 item 11): NATS stops and comes back while SSE clients
//! follow a user's rows. Writes made before, during (they commit in Postgres; the api's
//! outbox relay publishes them once NATS is back) and after the outage all reach the clients
//! exactly as the database has them, with no gap in the cursor, and the service recovers on
//! its own: unready while NATS is down, ready again after (with a consumer on CHANGES), never
//! exiting.
//!
//! Before the fix these failed: the tail kept reporting `changes_tail: ok` with NATS down, and
//! after a restart it waited ~15 s on the ordered consumer the server had lost while `/readyz`
//! said ready; a replica that had tailed nothing yet restarted "from the end" and skipped the
//! changesets written during the outage (its clients never got them).
//!
//! The tests own their NATS server (`PrivateNats`); Postgres is the shared one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use test_support::{PrivateNats, eventually, get};
use tokio::task::JoinHandle;

/// The bound for every eventual condition (a busy 2-core machine; the relay and the ordered
/// consumers back off up to 10 s while NATS is away).
const WAIT: Duration = Duration::from_secs(60);

/// What one SSE connection delivered.
#[derive(Debug, Default, Clone)]
struct Session {
    /// The cursor of the catch-up's last `delta` (`isLastChunk`): live frames start after it.
    caught_up_at: Option<u64>,
    /// The cursors of the `change` frames, in arrival order.
    changes: Vec<u64>,
    /// How it ended (`None` while open): `closed:<reason>` or `eof`.
    ended: Option<String>,
}

/// A client's state, shared with the task that reads its stream.
#[derive(Debug, Default)]
struct ClientLog {
    copy: LocalCopy,
    sessions: Vec<Session>,
    /// Stream requests refused: (status, code).
    refusals: Vec<(u16, String)>,
}

/// An offline-first client: one local copy fed by SSE; with `reconnect`, it opens a new
/// stream from its cursor (`Last-Event-ID`) whenever one is refused or ends, as
/// `EventSource` does.
struct Client {
    log: Arc<Mutex<ClientLog>>,
    task: JoinHandle<()>,
}

impl Client {
    fn spawn(
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
    async fn disconnect(self) -> Arc<Mutex<ClientLog>> {
        self.task.abort();
        let _ = self.task.await;
        if let Some(session) = self.log.lock().unwrap().sessions.last_mut() {
            session
                .ended
                .get_or_insert_with(|| "disconnected".to_owned());
        }
        self.log
    }

    fn heartbeats(&self) -> usize {
        let log = self.log.lock().unwrap();
        log.copy.kinds.get("heartbeat").copied().unwrap_or(0)
    }

    /// Whether the client's latest stream has sent its whole catch-up.
    fn caught_up(&self) -> bool {
        let log = self.log.lock().unwrap();
        log.sessions
            .last()
            .is_some_and(|session| session.caught_up_at.is_some() && session.ended.is_none())
    }

    fn live(&self) -> std::collections::BTreeMap<String, i64> {
        self.log.lock().unwrap().copy.live()
    }

    /// Fail at once (with the task's panic) if the reader stopped.
    async fn assert_reading(&mut self, name: &str) {
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
async fn readyz(streamer: &Streamer) -> (u16, String) {
    get(&format!("{}/readyz", streamer.base_url)).await
}

async fn unsent(api: &TestApi) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM api.outbox WHERE sent_at IS NULL")
        .fetch_one(&api.pool)
        .await
        .unwrap()
}

/// The test's own view of CHANGES on the private server (a new connection for each look:
/// one made before an outage might still be reconnecting after it).
struct Changes {
    nats_url: String,
    stream_name: String,
}

impl Changes {
    fn new(nats_url: &str, namespace: &str) -> Self {
        Self {
            nats_url: nats_url.to_owned(),
            stream_name: format!("{}_CHANGES", namespace.to_ascii_uppercase()),
        }
    }

    async fn stream(&self) -> async_nats::jetstream::stream::Stream {
        let client = async_nats::connect(&self.nats_url).await.unwrap();
        async_nats::jetstream::new(client)
            .get_stream(&self.stream_name)
            .await
            .unwrap()
    }

    /// Every changeset in CHANGES, read one by one: (seq, scope).
    async fn scopes(&self) -> Vec<(u64, String)> {
        let stream = self.stream().await;
        let last = stream.get_info().await.unwrap().state.last_sequence;
        let mut scopes = Vec::new();
        for seq in 1..=last {
            let message = stream.get_raw_message(seq).await.unwrap();
            let changeset =
                <messages::sync::v1::Changeset as prost::Message>::decode(message.payload.as_ref())
                    .unwrap();
            scopes.push((seq, changeset.scope));
        }
        scopes
    }

    async fn last_seq(&self) -> u64 {
        self.stream()
            .await
            .get_info()
            .await
            .unwrap()
            .state
            .last_sequence
    }

    /// Consumers of CHANGES on the server now (the streamer's tail and materializer).
    async fn consumers(&self) -> usize {
        self.stream()
            .await
            .get_info()
            .await
            .unwrap()
            .state
            .consumer_count
    }
}

/// Everything published, the read model caught up, the streamer's tail at the end of
/// CHANGES.
async fn settled(api: &TestApi, changes: &Changes, streamer: &Streamer) -> bool {
    if unsent(api).await > 0 {
        return false;
    }
    let last = changes.last_seq().await;
    let watermark: Option<i64> =
        sqlx::query_scalar("SELECT watermark FROM sync.materializer_state")
            .fetch_optional(&api.pool)
            .await
            .unwrap();
    watermark.unwrap_or(0) as u64 >= last && streamer.hub.position() >= last
}

/// `/readyz` fails while NATS is down, naming NATS and the tail (it has no consumer).
async fn assert_unready_while_nats_is_down(streamer: &Streamer) {
    let unready = eventually(Duration::from_secs(30), || async {
        let (status, body) = readyz(streamer).await;
        let report: Value = serde_json::from_str(&body).unwrap();
        status == 503
            && report["checks"]["nats"] != "ok"
            && report["checks"]["changes_tail"] != "ok"
    })
    .await;
    assert!(
        unready,
        "/readyz with NATS down: {:?}",
        readyz(streamer).await
    );
}

/// Once NATS is back, `/readyz` recovers, and when it does the streamer's tail already has
/// its consumer on the server. (A restarted server has lost the ordered consumers; one that
/// waited for async-nats to notice delivered nothing for about 15 s while ready.)
async fn assert_ready_means_tailing(streamer: &Streamer, changes: &Changes) {
    let ready = eventually(WAIT, || async { readyz(streamer).await.0 == 200 }).await;
    assert!(
        ready,
        "/readyz never recovered: {:?}",
        readyz(streamer).await
    );
    let consumers = changes.consumers().await;
    assert!(
        consumers >= 1,
        "/readyz says ready but CHANGES has no consumer: the tail still waits on the consumer \
         the restarted server lost"
    );
}

/// Each session's live frames are exactly the client's changesets after its catch-up, in
/// order: none missing, none repeated. The open session reaches the end of CHANGES.
fn assert_no_gap(name: &str, log: &ClientLog, in_scope: &BTreeSet<u64>) {
    let last_in_scope = in_scope.last().copied().unwrap_or(0);
    for (index, session) in log.sessions.iter().enumerate() {
        let caught_up_at = session
            .caught_up_at
            .unwrap_or_else(|| panic!("{name}: session {index} never caught up: {session:?}"));
        let open = session.ended.is_none();
        let until = if open {
            last_in_scope
        } else {
            session.changes.last().copied().unwrap_or(caught_up_at)
        };
        let expected: Vec<u64> = in_scope
            .range(caught_up_at + 1..=until.max(caught_up_at))
            .copied()
            .collect();
        assert_eq!(
            session.changes, expected,
            "{name}: session {index} (caught up at {caught_up_at}, open: {open}) got other \
             changesets than CHANGES holds for its scopes"
        );
    }
}

fn in_scope(changes: &[(u64, String)], scopes: &[String]) -> BTreeSet<u64> {
    changes
        .iter()
        .filter(|(_, scope)| scopes.contains(scope))
        .map(|(seq, _)| *seq)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_every_write_across_a_nats_restart_and_the_streamer_recovers() {
    let mut nats = PrivateNats::start();
    let nats_url = nats.url();
    let api = TestApi::start_with({
        let nats_url = nats_url.clone();
        move |config| config.common.nats_url = nats_url
    })
    .await;
    let streamer = Streamer::start(&api, {
        let nats_url = nats_url.clone();
        move |config| config.common.nats_url = nats_url
    })
    .await;
    let changes = Changes::new(&nats_url, &api.namespace);
    let ada = api.login(&unique_email("ada")).await;
    let bob = api.login(&unique_email("bob")).await;
    let team_id = api.team_with(&ada, &[(&bob, "member")]).await;
    let team_entry = |title: &str| {
        let mut input = entry(title);
        input["teamId"] = json!(team_id);
        input
    };
    let create = |user: &TestUser, input: Value| {
        let api = &api;
        let user = user.clone();
        async move {
            api.call(Some(&user), "journalEntries/create", input)
                .await
                .ok()["journalEntryId"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let update = |user: &TestUser, entry_id: &str, title: &str| {
        let api = &api;
        let user = user.clone();
        let input = json!({"journalEntryId": entry_id, "title": title});
        async move {
            api.call(Some(&user), "journalEntries/update", input)
                .await
                .ok();
        }
    };
    let delete = |user: &TestUser, entry_id: &str| {
        let api = &api;
        let user = user.clone();
        let input = json!({"journalEntryId": entry_id});
        async move {
            api.call(Some(&user), "journalEntries/delete", input)
                .await
                .ok();
        }
    };

    // Before: rows the catch-up sends, then rows that arrive live.
    let mut ada_entries = vec![
        create(&ada, entry("ada 1")).await,
        create(&ada, entry("ada 2")).await,
    ];
    let mut team_entries = vec![create(&bob, team_entry("team 1")).await];
    assert!(
        eventually(WAIT, || settled(&api, &changes, &streamer)).await,
        "the first writes never settled"
    );
    let ada_scopes = vec![format!("user.{}", ada.user_id), format!("team.{team_id}")];
    let bob_scopes = vec![format!("user.{}", bob.user_id), format!("team.{team_id}")];
    let ada_token = sync_token(&api, &ada).await;
    let bob_token = sync_token(&api, &bob).await;
    // Ada stays connected throughout; bob drops his connection during the first outage and
    // comes back with his cursor.
    let mut ada_client = Client::spawn(
        &streamer.base_url,
        &ada_token,
        Arc::new(Mutex::new(ClientLog::default())),
        false,
        "ada",
    );
    let bob_client = Client::spawn(
        &streamer.base_url,
        &bob_token,
        Arc::new(Mutex::new(ClientLog::default())),
        false,
        "bob",
    );
    ada_entries.push(create(&ada, entry("ada live")).await);
    team_entries.push(create(&ada, team_entry("team live")).await);
    update(&bob, &team_entries[0], "team 1 renamed").await;
    let converged = |client: &Client, user_id: uuid::Uuid| {
        let live = client.live();
        let api = &api;
        async move { live == expected_rows(api, user_id).await }
    };
    assert!(
        eventually(WAIT, || converged(&ada_client, ada.user_id)).await,
        "ada's copy never matched the database before the outage"
    );
    assert!(
        eventually(WAIT, || converged(&bob_client, bob.user_id)).await,
        "bob's copy never matched the database before the outage"
    );
    let bob_log = bob_client.disconnect().await;
    let bob_cursor = bob_log.lock().unwrap().copy.cursor.unwrap();

    let mut bob_client = None;
    for outage in 1..=2 {
        // NATS goes away: the streamer says so on /readyz and keeps serving what it has.
        let heartbeats = ada_client.heartbeats();
        nats.stop();
        assert_unready_while_nats_is_down(&streamer).await;

        // Writes during the outage commit in Postgres; they wait in the outbox.
        let unsent_before = unsent(&api).await;
        ada_entries.push(create(&ada, entry(&format!("ada during {outage}"))).await);
        update(&ada, &ada_entries[0], &format!("ada 1 during {outage}")).await;
        team_entries.push(create(&bob, team_entry(&format!("team during {outage}"))).await);
        update(
            &ada,
            &team_entries[1],
            &format!("team live during {outage}"),
        )
        .await;
        if outage == 1 {
            delete(&ada, &ada_entries[1]).await;
        } else {
            delete(&bob, &team_entries[0]).await;
        }
        assert!(
            unsent(&api).await >= unsent_before + 5,
            "outage {outage}: the writes were published with NATS down?"
        );
        if outage == 1 {
            // Bob reconnects with his cursor while NATS is still down: his catch-up comes
            // from the read model, his live changes once the tail resumes.
            bob_client = Some(Client::spawn(
                &streamer.base_url,
                &bob_token,
                bob_log.clone(),
                true,
                "bob",
            ));
        }
        let bob_stream = bob_client.as_ref().unwrap();
        assert!(
            eventually(WAIT, || async { bob_stream.caught_up() }).await,
            "outage {outage}: bob's stream did not catch up with NATS down: {:?}",
            bob_log.lock().unwrap().sessions
        );
        // Ada's stream stays open through the outage (heartbeats keep coming).
        assert!(
            eventually(WAIT, || async { ada_client.heartbeats() >= heartbeats + 3 }).await,
            "outage {outage}: ada's stream went quiet with NATS down"
        );
        ada_client.assert_reading("ada").await;

        nats.resume();
        assert_ready_means_tailing(&streamer, &changes).await;

        // After: more writes, live again.
        ada_entries.push(create(&ada, entry(&format!("ada after {outage}"))).await);
        team_entries.push(create(&ada, team_entry(&format!("team after {outage}"))).await);
        update(
            &bob,
            &team_entries[2],
            &format!("team during, after {outage}"),
        )
        .await;

        assert!(
            eventually(WAIT, || settled(&api, &changes, &streamer)).await,
            "outage {outage}: the outbox, the materializer or the tail never caught up \
             (unsent {}, hub at {})",
            unsent(&api).await,
            streamer.hub.position()
        );
        for (name, client, user_id) in [
            ("ada", &ada_client, ada.user_id),
            ("bob", bob_stream, bob.user_id),
        ] {
            let matched = eventually(WAIT, || converged(client, user_id)).await;
            let expected = expected_rows(&api, user_id).await;
            assert!(
                matched,
                "outage {outage}: {name}'s copy differs from the database:\n copy {:?}\n \
                 database {expected:?}",
                client.live()
            );
        }
        ada_client.assert_reading("ada").await;
        assert!(
            streamer.is_running(),
            "outage {outage}: the streamer or one of its tasks exited"
        );
    }

    // No gap, no duplicate: each stream's live frames are exactly its scopes' changesets.
    let changes = changes.scopes().await;
    {
        let ada_log = ada_client.log.lock().unwrap();
        assert_eq!(
            ada_log.sessions.len(),
            1,
            "ada stayed on one stream: {:?}",
            ada_log.sessions
        );
        assert_eq!(ada_log.sessions[0].ended, None, "ada's stream ended");
        assert_no_gap("ada", &ada_log, &in_scope(&changes, &ada_scopes));
        assert!(
            ada_log.refusals.is_empty(),
            "ada was refused: {:?}",
            ada_log.refusals
        );
        assert!(!ada_log.copy.kinds.contains_key("reset"), "ada was reset");
    }
    {
        let bob_log = bob_log.lock().unwrap();
        let bob_in_scope = in_scope(&changes, &bob_scopes);
        assert_no_gap("bob", &bob_log, &bob_in_scope);
        assert_eq!(
            bob_log.sessions.len(),
            2,
            "bob's stream from the first outage on stayed open: {:?}",
            bob_log.sessions
        );
        assert!(
            bob_log.sessions[1].ended.is_none(),
            "bob's last stream ended: {:?}",
            bob_log.sessions
        );
        // The reconnect resumed from bob's cursor (no reset, no full resend).
        let resumed = &bob_log.sessions[1];
        assert!(
            resumed.caught_up_at.unwrap() >= bob_cursor,
            "bob's reconnect went back before his cursor {bob_cursor}: {resumed:?}"
        );
        assert!(!bob_log.copy.kinds.contains_key("reset"), "bob was reset");
        assert!(
            bob_log.refusals.is_empty(),
            "bob's reconnect with NATS down was refused: {:?}",
            bob_log.refusals
        );
        println!(
            "ada: {} frames; bob: {} sessions, {} refusals, {} frames",
            ada_log_frames(&ada_client),
            bob_log.sessions.len(),
            bob_log.refusals.len(),
            bob_log.copy.frames
        );
    }

    let (status, _) = readyz(&streamer).await;
    assert_eq!(status, 200);
    assert!(
        streamer.is_running(),
        "the streamer or one of its tasks exited"
    );
    ada_client.task.abort();
    if let Some(bob) = bob_client {
        bob.task.abort();
    }
    streamer.stop().await;
    api.stop().await;
}

fn ada_log_frames(client: &Client) -> usize {
    client.log.lock().unwrap().copy.frames
}

/// A replica that started on an empty CHANGES (a new deployment) and has tailed nothing yet
/// when NATS restarts: the first changesets, written during the outage, still reach its
/// clients. (The tail took position 0 for "never started" and, restarting after the outage,
/// skipped to the stream's end, past them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_changes_written_while_nats_is_down_reach_a_replica_that_tailed_none_yet() {
    let mut nats = PrivateNats::start();
    let nats_url = nats.url();
    let api = TestApi::start_with({
        let nats_url = nats_url.clone();
        move |config| config.common.nats_url = nats_url
    })
    .await;
    let streamer = Streamer::start(&api, {
        let nats_url = nats_url.clone();
        move |config| config.common.nats_url = nats_url
    })
    .await;
    let changes = Changes::new(&nats_url, &api.namespace);
    assert_eq!(changes.last_seq().await, 0, "CHANGES starts empty");

    nats.stop();
    assert_unready_while_nats_is_down(&streamer).await;
    // The first user signs up and writes while NATS is away; a client follows from the start.
    let ada = api.login(&unique_email("ada")).await;
    let token = sync_token(&api, &ada).await;
    let log = Arc::new(Mutex::new(ClientLog::default()));
    let mut client = Client::spawn(&streamer.base_url, &token, Arc::clone(&log), true, "ada");
    let mut entries = Vec::new();
    for title in ["first", "second", "third"] {
        let created = api
            .call(Some(&ada), "journalEntries/create", entry(title))
            .await
            .ok();
        entries.push(created["journalEntryId"].as_str().unwrap().to_owned());
    }
    api.call(
        Some(&ada),
        "journalEntries/update",
        json!({"journalEntryId": entries[0], "title": "first, renamed"}),
    )
    .await
    .ok();
    assert!(unsent(&api).await >= 5, "nothing can be published yet");
    assert!(
        eventually(WAIT, || async { client.caught_up() }).await,
        "ada's stream did not open with NATS down: {:?}",
        log.lock().unwrap()
    );

    nats.resume();
    assert_ready_means_tailing(&streamer, &changes).await;
    api.call(Some(&ada), "journalEntries/create", entry("after"))
        .await
        .ok();
    assert!(
        eventually(WAIT, || settled(&api, &changes, &streamer)).await,
        "the outbox, the materializer or the tail never caught up (unsent {}, hub at {})",
        unsent(&api).await,
        streamer.hub.position()
    );
    let matched = eventually(WAIT, || async {
        client.live() == expected_rows(&api, ada.user_id).await
    })
    .await;
    assert!(
        matched,
        "ada's copy differs from the database:\n copy {:?}\n database {:?}",
        client.live(),
        expected_rows(&api, ada.user_id).await
    );
    client.assert_reading("ada").await;
    let in_scope = in_scope(&changes.scopes().await, &[format!("user.{}", ada.user_id)]);
    {
        let log = log.lock().unwrap();
        assert_no_gap("ada", &log, &in_scope);
        assert!(!log.copy.kinds.contains_key("reset"), "ada was reset");
        assert!(
            log.refusals.is_empty(),
            "ada was refused: {:?}",
            log.refusals
        );
        assert_eq!(
            log.sessions.len(),
            1,
            "ada's stream closed: {:?}",
            log.sessions
        );
    }
    assert!(
        streamer.is_running(),
        "the streamer or one of its tasks exited"
    );
    client.task.abort();
    streamer.stop().await;
    api.stop().await;
}

// Recovery bounds (issue 17): how soon live sync flows again once NATS or Postgres is back,
// measured from the moment the server accepts connections again. The probe changesets are
// published straight into CHANGES from the test, as the api's relay publishes them, so the
// bound is the streamer's own (the api's relay reconnects on its own schedule).

/// After NATS returns: live `change` frames, the read model and `session.revoked`.
const AFTER_NATS: Duration = Duration::from_secs(2);
/// After Postgres returns: the read model.
const AFTER_POSTGRES: Duration = Duration::from_secs(1);

/// Every event of one SSE connection, with when it arrived.
struct Frames {
    events: Arc<Mutex<Vec<(Instant, Event)>>>,
    task: JoinHandle<()>,
}

impl Frames {
    async fn open(base_url: &str, token: &str) -> Self {
        let mut sse = open_stream(base_url, token, None).await;
        assert_eq!(sse.status, 200, "stream refused: {:?}", sse.error);
        let events = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let events = Arc::clone(&events);
            async move {
                while let Some(event) = sse.next(Duration::from_secs(120)).await {
                    events.lock().unwrap().push((Instant::now(), event));
                }
            }
        });
        let frames = Self { events, task };
        assert!(
            eventually(WAIT, || async { frames.caught_up() }).await,
            "the stream never caught up"
        );
        frames
    }

    fn caught_up(&self) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|(_, event)| event.data["type"] == "delta" && event.data["isLastChunk"] == true)
    }

    /// When the `change` frame carrying row `row_id` arrived.
    fn change_of(&self, row_id: &str) -> Option<Instant> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|(_, event)| {
                event.data["type"] == "change"
                    && event.data["changes"]
                        .as_array()
                        .is_some_and(|changes| changes.iter().any(|c| c["rowId"] == row_id))
            })
            .map(|(at, _)| *at)
    }

    /// When the stream was closed, and why.
    fn closed(&self) -> Option<(Instant, String)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|(_, event)| event.data["type"] == "closed")
            .map(|(at, event)| (*at, event.data["reason"].to_string()))
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publish a journal entry change for `scope` into CHANGES on `nats_url`, as the api's relay
/// does (a new connection, retried while the server is still starting); returns its sequence.
async fn publish_change(nats_url: &str, namespace: &str, scope: &str, row_id: &str) -> u64 {
    let row = json!({
        "journalEntryId": row_id,
        "title": "probe",
        "content": "written after the restart",
        "version": 1,
        "deletedAt": null,
    });
    let changeset = messages::sync::v1::Changeset {
        scope: scope.to_owned(),
        changes: vec![messages::sync::v1::RowChange {
            table: "journal_entries".to_owned(),
            op: messages::sync::v1::ChangeOp::Insert as i32,
            row_id: row_id.to_owned(),
            version: 1,
            row_json: row.to_string().into_bytes(),
        }],
        written_at_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    };
    let payload = prost::Message::encode_to_vec(&changeset);
    let subject = format!("{namespace}.changes.{scope}");
    publish_acked(nats_url, subject, payload).await
}

/// Publish `payload` to a stream's subject and wait for JetStream's ack; returns the sequence.
async fn publish_acked(nats_url: &str, subject: String, payload: Vec<u8>) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let attempt = async {
            let client = async_nats::connect(nats_url).await.ok()?;
            let jetstream = async_nats::jetstream::new(client);
            let ack = jetstream
                .publish(subject.clone(), payload.clone().into())
                .await
                .ok()?;
            ack.await.ok().map(|ack| ack.sequence)
        };
        if let Ok(Some(seq)) = tokio::time::timeout(Duration::from_secs(1), attempt).await {
            return seq;
        }
        assert!(Instant::now() < deadline, "JetStream never acked {subject}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long after `since` `condition` first held (polled every 20 ms, for at most `WAIT`).
async fn first_true_after<F, Fut>(since: Instant, mut condition: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while since.elapsed() < WAIT {
        if condition().await {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn watermark(pool: &sqlx::PgPool) -> u64 {
    let watermark: Option<i64> =
        sqlx::query_scalar("SELECT watermark FROM sync.materializer_state")
            .fetch_optional(pool)
            .await
            .unwrap_or(None);
    watermark.unwrap_or(0) as u64
}

fn session_of(token: &str) -> uuid::Uuid {
    let key = sync_protocol::TokenKey::new(secrecy::SecretString::from(
        sync_protocol::DEVELOPMENT_SECRET,
    ));
    key.verify(token, chrono::Utc::now().timestamp_millis())
        .expect("the api's sync token verifies")
        .session_id
}

/// NATS stops for a second, then for nine (long enough for a client's reconnect back-off to
/// grow: async-nats' default waits up to 4 s between attempts). Each time, within 2 s of NATS
/// accepting connections again: `/readyz` is green, an attached SSE client has the `change`
/// frame of a changeset published after the restart, the read model has applied it, and (the
/// second time) a `session.revoked` published after the restart has closed the session's
/// stream. Before the fix the long outage took about 3.5 s to `/readyz` and to the frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sync_is_back_within_two_seconds_of_nats() {
    let mut nats = PrivateNats::start();
    let nats_url = nats.url();
    let api = TestApi::start_with({
        let nats_url = nats_url.clone();
        move |config| config.common.nats_url = nats_url
    })
    .await;
    let streamer = Streamer::start(&api, {
        let nats_url = nats_url.clone();
        move |config| config.common.nats_url = nats_url
    })
    .await;
    let ada = api.login(&unique_email("ada")).await;
    let bob = api.login(&unique_email("bob")).await;
    let ada_frames = Frames::open(&streamer.base_url, &sync_token(&api, &ada).await).await;
    let bob_token = sync_token(&api, &bob).await;
    let bob_frames = Frames::open(&streamer.base_url, &bob_token).await;
    let ada_scope = format!("user.{}", ada.user_id);

    for (outage, down_for) in [(1, Duration::from_secs(1)), (2, Duration::from_secs(9))] {
        nats.stop();
        assert_unready_while_nats_is_down(&streamer).await;
        tokio::time::sleep(down_for).await;
        nats.resume();
        let back = Instant::now();

        let row_id = uuid::Uuid::new_v4().to_string();
        let seq = publish_change(&nats_url, &api.namespace, &ada_scope, &row_id).await;
        if outage == 2 {
            let revoked = messages::journal::v1::SessionRevoked {
                session_id: session_of(&bob_token).to_string(),
                user_id: bob.user_id.to_string(),
                reason: "revoked".to_owned(),
                revoked_at_ms: chrono::Utc::now().timestamp_millis(),
            };
            publish_acked(
                &nats_url,
                format!("{}.events.session.revoked", api.namespace),
                prost::Message::encode_to_vec(&revoked),
            )
            .await;
        }

        let ready = first_true_after(back, || async { readyz(&streamer).await.0 == 200 }).await;
        let framed = first_true_after(back, || async { ada_frames.change_of(&row_id).is_some() })
            .await
            .and_then(|_| ada_frames.change_of(&row_id))
            .map(|at| at - back);
        let materialized =
            first_true_after(back, || async { watermark(&api.pool).await >= seq }).await;
        println!(
            "outage {outage} ({down_for:?}): ready after {ready:?}, change frame after \
             {framed:?}, materialized after {materialized:?}"
        );
        assert!(
            ready.is_some_and(|after| after <= AFTER_NATS),
            "outage {outage}: /readyz green {ready:?} after NATS was back (bound {AFTER_NATS:?}): {:?}",
            readyz(&streamer).await
        );
        assert!(
            framed.is_some_and(|after| after <= AFTER_NATS),
            "outage {outage}: the change frame came {framed:?} after NATS was back (bound {AFTER_NATS:?})"
        );
        assert!(
            materialized.is_some_and(|after| after <= AFTER_NATS),
            "outage {outage}: the read model applied it {materialized:?} after NATS was back \
             (bound {AFTER_NATS:?})"
        );
        if outage == 2 {
            let closed = first_true_after(back, || async { bob_frames.closed().is_some() })
                .await
                .and_then(|_| bob_frames.closed());
            let (at, reason) = closed.expect("bob's stream was never closed");
            assert_eq!(
                reason, "\"session_revoked\"",
                "bob's stream closed for another reason"
            );
            assert!(
                at - back <= AFTER_NATS,
                "the revoked session's stream closed {:?} after NATS was back (bound {AFTER_NATS:?})",
                at - back
            );
        } else {
            assert_eq!(bob_frames.closed(), None, "bob's stream closed");
        }
    }
    assert_eq!(ada_frames.closed(), None, "ada's stream closed");
    assert!(
        streamer.is_running(),
        "the streamer or one of its tasks exited"
    );
    drop((ada_frames, bob_frames));
    streamer.stop().await;
    api.stop().await;
}

/// A tail that stops taking changesets while CHANGES moves on makes `/readyz` fail once the
/// oldest changeset it has not taken is older than `SYNC_TAIL_READY_LAG_SECONDS`, naming the
/// lag; while nothing is written it has nothing to be behind on. (Before, `/readyz` said
/// `changes_tail: ok` as long as no error had been seen.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_the_tail_is_behind_the_stream_head() {
    let nats = PrivateNats::start();
    let nats_url = nats.url();
    let api = TestApi::start_with({
        let nats_url = nats_url.clone();
        move |config| config.common.nats_url = nats_url
    })
    .await;
    let streamer = Streamer::start(&api, {
        let nats_url = nats_url.clone();
        move |config| {
            config.common.nats_url = nats_url;
            config.sync.tail_ready_lag = Duration::from_secs(1);
        }
    })
    .await;
    let scope = format!("user.{}", uuid::Uuid::new_v4());
    let first = publish_change(&nats_url, &api.namespace, &scope, "1").await;
    assert!(
        streamer.hub.wait_for(first, WAIT).await,
        "the tail never took the first changeset"
    );
    assert_eq!(
        readyz(&streamer).await.0,
        200,
        "ready while the tail is at the head"
    );

    // The tail stops (as a consumer that delivers nothing would); changesets keep coming.
    streamer.tail.abort();
    let position = streamer.hub.position();
    let second = publish_change(&nats_url, &api.namespace, &scope, "2").await;
    assert!(second > position);
    let unready = eventually(Duration::from_secs(10), || async {
        let (status, body) = readyz(&streamer).await;
        status == 503 && body.contains("behind the head of CHANGES")
    })
    .await;
    let (status, body) = readyz(&streamer).await;
    assert!(unready, "/readyz with the tail behind: {status} {body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        report["checks"]["nats"], "ok",
        "only the tail is unready: {body}"
    );
    assert_eq!(
        report["checks"]["postgres"], "ok",
        "only the tail is unready: {body}"
    );

    let metrics = get(&format!("{}/metrics", streamer.base_url)).await.1;
    let gauge = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}"))
    };
    assert!(gauge("sync_tail_lag_messages") >= 1.0, "{metrics}");
    assert!(gauge("sync_tail_lag_seconds") > 0.0, "{metrics}");
    streamer.kill();
    api.stop().await;
}

/// Postgres stops for three seconds (long enough for the pool's connection retries to back
/// off to a second) while an SSE client is attached. Within 1 s of Postgres accepting
/// connections again, the read model has applied a changeset published after the restart,
/// and the attached client had its `change` frame (the live path never waits for Postgres).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_model_is_back_within_a_second_of_postgres() {
    let mut postgres = test_support::PrivatePostgres::start();
    let api = TestApi::start_on(test_support::TestDb::on_server(&postgres.admin_url()).await).await;
    // The production lease (3 s): the leader checks it every second.
    let streamer = Streamer::start(&api, |config| {
        config.sync.lease = Duration::from_secs(3);
    })
    .await;
    let ada = api.login(&unique_email("ada")).await;
    let frames = Frames::open(&streamer.base_url, &sync_token(&api, &ada).await).await;
    let scope = format!("user.{}", ada.user_id);
    let nats_url = test_support::nats_url();
    let before = publish_change(
        &nats_url,
        &api.namespace,
        &scope,
        &uuid::Uuid::new_v4().to_string(),
    )
    .await;
    assert!(
        eventually(WAIT, || async { watermark(&api.pool).await >= before }).await,
        "the read model never applied the first changeset"
    );
    for outage in 1..=2 {
        postgres.stop();
        // The materializer finds out (its lease renewal fails), then waits it out.
        tokio::time::sleep(Duration::from_secs(3)).await;
        postgres.resume();
        let back = Instant::now();
        let row_id = uuid::Uuid::new_v4().to_string();
        let seq = publish_change(&nats_url, &api.namespace, &scope, &row_id).await;
        let materialized =
            first_true_after(back, || async { watermark(&api.pool).await >= seq }).await;
        let framed = first_true_after(back, || async { frames.change_of(&row_id).is_some() })
            .await
            .and_then(|_| frames.change_of(&row_id))
            .map(|at| at - back);
        println!(
            "outage {outage}: materialized after {materialized:?}, change frame after {framed:?}"
        );
        assert!(
            framed.is_some_and(|after| after <= AFTER_POSTGRES),
            "outage {outage}: the change frame came {framed:?} after Postgres was back"
        );
        assert!(
            materialized.is_some_and(|after| after <= AFTER_POSTGRES),
            "outage {outage}: the read model applied it {materialized:?} after Postgres was back \
             (bound {AFTER_POSTGRES:?})"
        );
    }
    assert_eq!(frames.closed(), None, "the stream closed");
    drop(frames);
    streamer.stop().await;
    api.stop().await;
}
