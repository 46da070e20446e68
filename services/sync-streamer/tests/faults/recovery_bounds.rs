//! Recovery bounds (issue 17): how soon live sync flows again once NATS or Postgres is back,
//! and `/readyz` while the tail is behind.

use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::{PrivateNats, eventually, get};

use crate::client::readyz;
use crate::common::*;
use crate::fixtures::{WAIT, assert_unready_while_nats_is_down, start_on_nats};
use crate::recovery_probes::{
    AFTER_NATS, AFTER_POSTGRES, Frames, first_true_after, publish_acked, publish_change,
    session_of, watermark,
};

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
    let (api, streamer) = start_on_nats(&nats_url, |_| {}).await;
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
    let (api, streamer) = start_on_nats(&nats_url, |config| {
        config.sync.tail_ready_lag = Duration::from_secs(1);
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
