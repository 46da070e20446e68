//! Set-up and checks shared by the fault tests: the bound for eventual conditions, `/readyz`,
//! the test's view of CHANGES, and the checks on what clients received.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use test_support::eventually;

use crate::client::{ClientLog, readyz};
use crate::common::*;

/// The bound for every eventual condition (a busy 2-core machine; the relay and the ordered
/// consumers back off up to 10 s while NATS is away).
pub(crate) const WAIT: Duration = Duration::from_secs(60);

pub(crate) async fn unsent(api: &TestApi) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM api.outbox WHERE sent_at IS NULL")
        .fetch_one(&api.pool)
        .await
        .unwrap()
}

/// The test's own view of CHANGES on the private server (a new connection for each look:
/// one made before an outage might still be reconnecting after it).
pub(crate) struct Changes {
    pub(crate) nats_url: String,
    pub(crate) stream_name: String,
}

impl Changes {
    pub(crate) fn new(nats_url: &str, namespace: &str) -> Self {
        Self {
            nats_url: nats_url.to_owned(),
            stream_name: format!("{}_CHANGES", namespace.to_ascii_uppercase()),
        }
    }

    pub(crate) async fn stream(&self) -> async_nats::jetstream::stream::Stream {
        let client = async_nats::connect(&self.nats_url).await.unwrap();
        async_nats::jetstream::new(client)
            .get_stream(&self.stream_name)
            .await
            .unwrap()
    }

    /// Every changeset in CHANGES, read one by one: (seq, scope).
    pub(crate) async fn scopes(&self) -> Vec<(u64, String)> {
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

    pub(crate) async fn last_seq(&self) -> u64 {
        self.state().await.last_sequence
    }

    /// Consumers of CHANGES on the server now (the streamer's tail and materializer).
    pub(crate) async fn consumers(&self) -> usize {
        self.state().await.consumer_count
    }

    async fn state(&self) -> async_nats::jetstream::stream::State {
        self.stream().await.get_info().await.unwrap().state
    }
}

/// The api and a streamer replica on the (private) NATS server at `nats_url`; `configure`
/// sets the streamer's further settings.
pub(crate) async fn start_on_nats(
    nats_url: &str,
    configure: impl FnOnce(&mut sync_streamer::Config),
) -> (TestApi, Streamer) {
    let api = TestApi::start_with(|config| config.common.nats_url = nats_url.to_owned()).await;
    let streamer = Streamer::start(&api, |config| {
        config.common.nats_url = nats_url.to_owned();
        configure(config);
    })
    .await;
    (api, streamer)
}

/// Everything published, the read model caught up, the streamer's tail at the end of
/// CHANGES.
pub(crate) async fn settled(api: &TestApi, changes: &Changes, streamer: &Streamer) -> bool {
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
pub(crate) async fn assert_unready_while_nats_is_down(streamer: &Streamer) {
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
pub(crate) async fn assert_ready_means_tailing(streamer: &Streamer, changes: &Changes) {
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
pub(crate) fn assert_no_gap(name: &str, log: &ClientLog, in_scope: &BTreeSet<u64>) {
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

pub(crate) fn in_scope(changes: &[(u64, String)], scopes: &[String]) -> BTreeSet<u64> {
    changes
        .iter()
        .filter(|(_, scope)| scopes.contains(scope))
        .map(|(seq, _)| *seq)
        .collect()
}
