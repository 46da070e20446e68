//! A client that connects to a random live replica, reads for a while and disconnects, and
//! what differs between its copy and the read model.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt;
use rand::rngs::StdRng;
use serde_json::Value;

use crate::common::*;
use crate::transactions::Once;
use crate::writers::Shared;

/// How long a final resume waits without a frame before it counts as caught up.
const QUIET: Duration = Duration::from_millis(2500);

pub(crate) struct Client {
    pub(crate) index: usize,
    pub(crate) copy: LocalCopy,
    pub(crate) token: Option<String>,
    pub(crate) sessions: usize,
    /// Every `change` frame, with the teams the client followed around it.
    pub(crate) change_frames: Vec<ChangeFrame>,
    /// Row versions received, for the exactly-once check.
    pub(crate) once: Once,
    /// What this client did and saw (connections, frames other than heartbeats), printed
    /// when its copy differs from the database.
    pub(crate) log: Vec<String>,
}

impl Client {
    /// One connection: resume from the cursor, read until `read_for` passes (or quiet).
    pub(crate) async fn session(
        &mut self,
        shared: &Shared,
        base_url: &str,
        read_for: Option<Duration>,
    ) {
        let user = &shared.users[self.index];
        for _ in 0..5 {
            let token = match &self.token {
                Some(token) => token.clone(),
                None => {
                    let token = sync_token(&shared.api, user).await;
                    self.token = Some(token.clone());
                    token
                }
            };
            let since = self.copy.position.clone();
            let trace = read_for.is_none() || std::env::var_os("SYNC_TEST_TRACE").is_some();
            if trace {
                println!(
                    "user {}: connecting to {base_url} since {since:?}",
                    self.index
                );
            }
            // For the log: how far the read model was when the stream opened.
            let watermark: Option<i64> =
                sqlx::query_scalar("SELECT watermark FROM sync.materializer_state")
                    .fetch_optional(&shared.api.pool)
                    .await
                    .unwrap();
            // A replica picked just before the leader was stopped refuses the connection: a
            // real client tries again elsewhere, and so does this one (its caller picks again).
            let mut sse = match try_open_stream(base_url, &token, since.as_deref()).await {
                Ok(sse) => sse,
                Err(error) => {
                    println!("user {}: cannot connect to {base_url}: {error}", self.index);
                    self.log
                        .push(format!("connect {base_url} since {since:?}: {error}"));
                    return;
                }
            };
            if trace {
                println!("user {}: status {}", self.index, sse.status);
            }
            self.log.push(format!(
                "connect #{} {base_url} since {since:?} (read model at {watermark:?}) token teams {:?}: {} {}",
                self.sessions + 1,
                token_teams(shared, &token),
                sse.status,
                sse.error.as_ref().map(|error| error["code"].clone()).unwrap_or_default()
            ));
            if sse.status != 200 {
                let code = sse
                    .error
                    .as_ref()
                    .and_then(|error| error["code"].as_str())
                    .unwrap_or("");
                // The one refusal this run provokes: the user joined a team the token does
                // not list (a re-join after this token was issued). Get a new token.
                assert!(
                    sse.status == 401 && code == "SYNC_TOKEN_STALE",
                    "user {}: the stream answered {}: {:?}",
                    self.index,
                    sse.status,
                    sse.error
                );
                self.token = None;
                continue;
            }
            self.sessions += 1;
            self.copy.caught_up = false;
            self.copy.closed = None;
            let until = read_for.map(|duration| tokio::time::Instant::now() + duration);
            // Heartbeats do not count as activity.
            let mut quiet_until = tokio::time::Instant::now() + QUIET;
            loop {
                let wait = match until {
                    Some(until) => until.saturating_duration_since(tokio::time::Instant::now()),
                    None if self.copy.caught_up => {
                        quiet_until.saturating_duration_since(tokio::time::Instant::now())
                    }
                    None => Duration::from_secs(20),
                };
                let Some(event) = sse.next(wait).await else {
                    break;
                };
                let teams_before = own_teams(&self.copy, user.user_id);
                let kind = self.copy.apply(&event);
                self.once.frame(&event, &kind, self.sessions);
                if kind != "heartbeat" {
                    quiet_until = tokio::time::Instant::now() + QUIET;
                    self.log.push(format!("  id {:?} {}", event.id, event.data));
                }
                if kind == "change" {
                    self.change_frames.push(ChangeFrame {
                        session: self.sessions,
                        rows: event.data["changes"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|change| {
                                (
                                    change["table"].as_str().unwrap().to_owned(),
                                    change["rowId"].as_str().unwrap().to_owned(),
                                    change["version"].as_i64().unwrap(),
                                )
                            })
                            .collect(),
                        teams_before,
                        teams_after: own_teams(&self.copy, user.user_id),
                    });
                }
                if kind == "closed" {
                    break;
                }
            }
            self.once.session_ended();
            match self.copy.closed.as_deref() {
                // Reconnect at once, with a new token if the old one lacks the team.
                Some("scopes_changed") => {
                    self.token = None;
                    if read_for.is_some() {
                        return;
                    }
                }
                _ => return,
            }
        }
        if read_for.is_none() {
            panic!(
                "user {}: the final resume did not get a stream in 5 tries",
                self.index
            );
        }
    }
}

/// The teams a sync token lists (for the log).
fn token_teams(shared: &Shared, token: &str) -> Vec<usize> {
    let config = sync_streamer::Config::for_tests(shared.api.db.url(), &test_support::nats_url());
    let key = sync_protocol::TokenKey::new(config.sync.token_secret.clone());
    let claims = key
        .verify(token, chrono::Utc::now().timestamp_millis())
        .unwrap();
    claims
        .team_ids
        .iter()
        .map(|team_id| {
            shared
                .teams
                .iter()
                .position(|team| *team == team_id.to_string())
                .unwrap()
        })
        .collect()
}

/// What differs between a client's copy and what it should hold: the extra keys, the missing
/// ones and those at another version, each with the read model's copies of the row and the
/// client's frames that carried it; then the client's connections and membership frames.
pub(crate) async fn difference(
    shared: &Shared,
    client: &Client,
    expected: &BTreeMap<String, i64>,
) -> String {
    let live = client.copy.live();
    let mut report = String::new();
    let keys: BTreeSet<&String> = live.keys().chain(expected.keys()).collect();
    for key in keys {
        let (have, want) = (live.get(key), expected.get(key));
        if have == want {
            continue;
        }
        let kind = match (have, want) {
            (Some(_), None) => "extra",
            (None, Some(_)) => "missing",
            _ => "other version",
        };
        report.push_str(&format!(
            "{kind} {key}: copy {have:?} (held: {}), expected {want:?}\n",
            client
                .copy
                .rows
                .get(key)
                .map_or("nothing".to_owned(), Value::to_string)
        ));
        let row_id = key.split_once('/').unwrap().1;
        let copies: Vec<(String, i64, i64, bool)> = sqlx::query_as(
            "SELECT scope, version, seq, deleted FROM sync.rows WHERE row_id = $1 ORDER BY scope",
        )
        .bind(row_id)
        .fetch_all(&shared.api.pool)
        .await
        .unwrap();
        for (scope, version, seq, deleted) in copies {
            report.push_str(&format!(
                "  read model {scope}: version {version} seq {seq} deleted {deleted}\n"
            ));
        }
        for line in client.log.iter().filter(|line| line.contains(row_id)) {
            report.push_str(&format!("  seen {line}\n"));
        }
    }
    // The whole story, for a closer look: the client's log and every changeset published.
    let path = std::env::temp_dir().join(format!(
        "sync-property-{}-user{}.log",
        shared.api.namespace, client.index
    ));
    let mut dump = client.log.join("\n");
    dump.push_str("\n\nCHANGES:\n");
    let last = last_change_seq(&shared.api).await;
    let nats = async_nats::connect(test_support::nats_url()).await.unwrap();
    let stream = async_nats::jetstream::new(nats)
        .get_stream(format!(
            "{}_CHANGES",
            shared.api.namespace.to_ascii_uppercase()
        ))
        .await
        .unwrap();
    for seq in 1..=last {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        let Ok(changeset) =
            <messages::sync::v1::Changeset as prost::Message>::decode(message.payload.as_ref())
        else {
            continue;
        };
        let changes: Vec<String> = changeset
            .changes
            .iter()
            .map(|change| {
                format!(
                    "{}/{} v{} op{}",
                    change.table, change.row_id, change.version, change.op
                )
            })
            .collect();
        dump.push_str(&format!(
            "{seq} {} {}\n",
            changeset.scope,
            changes.join(", ")
        ));
    }
    std::fs::write(&path, dump).unwrap();
    report.push_str(&format!("full log: {}\n", path.display()));
    report.push_str("connections and membership frames:\n");
    for line in &client.log {
        if line.starts_with("connect")
            || line.contains("scope_removed")
            || line.contains("closed")
            || line.contains("team_members")
        {
            let short: String = line.chars().take(400).collect();
            report.push_str(&format!("  {short}\n"));
        }
    }
    report
}

/// A client that connects to a random live replica, reads for a random while, disconnects.
pub(crate) async fn follow(
    shared: Arc<Shared>,
    index: usize,
    mut rng: StdRng,
    deadline: Instant,
) -> Client {
    let mut client = Client {
        index,
        copy: LocalCopy::default(),
        token: None,
        sessions: 0,
        change_frames: Vec::new(),
        once: Once::default(),
        log: Vec::new(),
    };
    while Instant::now() < deadline {
        let base_url = {
            let replicas = shared.replicas.lock().unwrap();
            replicas[rng.random_range(0..replicas.len())].clone()
        };
        let read_for = Duration::from_millis(rng.random_range(50..1500));
        client.session(&shared, &base_url, Some(read_for)).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
    }
    client
}

/// A `change` frame as a client got it.
pub(crate) struct ChangeFrame {
    pub(crate) session: usize,
    /// (table, row id, version) of each change.
    pub(crate) rows: Vec<(String, String, i64)>,
    /// The teams the client's own memberships made it follow before and after the frame.
    pub(crate) teams_before: BTreeSet<String>,
    pub(crate) teams_after: BTreeSet<String>,
}

/// The teams `user_id` holds an active membership row of in `copy`.
fn own_teams(copy: &LocalCopy, user_id: uuid::Uuid) -> BTreeSet<String> {
    let user_id = user_id.to_string();
    copy.rows
        .iter()
        .filter(|(key, row)| {
            key.starts_with("team_members/")
                && row["userId"].as_str() == Some(user_id.as_str())
                && row["deletedAt"].is_null()
        })
        .map(|(_, row)| row["teamId"].as_str().unwrap().to_owned())
        .collect()
}
