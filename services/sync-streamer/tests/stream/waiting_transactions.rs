//! Resuming past a transaction that waits for a part: it arrives whole, nothing repeats.

use std::time::Duration;

use serde_json::json;

use crate::common::*;
use crate::fixtures::{follow, read_until, stop, titles, users};

/// A client cut off while a transaction waits for a part, resuming from the cursor of a frame
/// sent past the waiting part: the waiting transaction arrives whole, and what was sent past
/// it never again (live: the changesets come from the hub or JetStream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_past_a_waiting_transaction_repeats_nothing_live() {
    resume_past_a_waiting_transaction(Duration::from_secs(30)).await;
}

/// The same, when the read model has passed the waiting transaction (its wait ended) by the
/// time the client resumes: the catch-up leaves out what the cursor lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_past_a_waiting_transaction_repeats_nothing_in_the_catch_up() {
    resume_past_a_waiting_transaction(Duration::from_millis(400)).await;
}

async fn resume_past_a_waiting_transaction(transaction_wait: Duration) {
    use messages::sync::v1::{ChangeOp, Changeset, RowChange};
    use prost::Message;

    let api = TestApi::start().await;
    let streamer = Streamer::start(&api, |config| {
        config.sync.transaction_wait = transaction_wait;
    })
    .await;
    let [ada, bob] = users(&api, ["ada", "bob"]).await;
    let team_id = api.team_with(&ada, &[(&bob, "member")]).await;
    settle(&api).await;
    let token = sync_token(&api, &bob).await;
    let (mut sse, mut copy) =
        follow(&streamer.base_url, &token, None, Duration::from_millis(500)).await;
    assert!(copy.caught_up);

    // Changesets as a relay publishes them: a transaction of two parts (bob's scope and the
    // team's) whose second part is late, and another transaction between the two.
    let nats = async_nats::connect(test_support::nats_url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(nats);
    let user_scope = format!("user.{}", bob.user_id);
    let team_scope = format!("team.{team_id}");
    let entry_row = |title: &str, team: Option<&str>| {
        let journal_entry_id = uuid::Uuid::now_v7();
        let data = json!({
            "journalEntryId": journal_entry_id, "userId": bob.user_id, "teamId": team,
            "title": title, "content": "", "version": 1, "deletedAt": null,
            "createdAt": 1, "updatedAt": 1,
        });
        RowChange {
            table: "journal_entries".to_owned(),
            op: ChangeOp::Insert as i32,
            row_id: journal_entry_id.to_string(),
            version: 1,
            row_json: data.to_string().into_bytes(),
        }
    };
    let transaction_id = uuid::Uuid::now_v7().to_string();
    let part = |index: u32, scope: &str, change: RowChange| Changeset {
        scope: scope.to_owned(),
        changes: vec![change],
        written_at_ms: 1,
        transaction_id: transaction_id.clone(),
        part_index: index,
        part_count: 2,
        transaction_scopes: vec![user_scope.clone(), team_scope.clone()],
    };
    let publish = |scope: String, changeset: Changeset| {
        let jetstream = jetstream.clone();
        let subject = format!("{}.changes.{scope}", api.namespace);
        async move {
            jetstream
                .publish(subject, changeset.encode_to_vec().into())
                .await
                .unwrap()
                .await
                .unwrap()
                .sequence
        }
    };
    let first_part = publish(
        user_scope.clone(),
        part(0, &user_scope, entry_row("first part", None)),
    )
    .await;
    let between = publish(
        team_scope.clone(),
        Changeset {
            scope: team_scope.clone(),
            changes: vec![entry_row("between", Some(&team_id))],
            written_at_ms: 1,
            ..Changeset::default()
        },
    )
    .await;
    assert_eq!(between, first_part + 1);

    // The frame past the waiting part: its cursor holds everything before that part, and it.
    read_until(&mut sse, &mut copy, "change").await;
    let cursor = copy.position.clone().unwrap();
    assert_eq!(cursor, format!("{}.{between}", first_part - 1));
    assert_eq!(titles(&copy), ["between"]);
    drop(sse);

    if transaction_wait < Duration::from_secs(5) {
        // The read model stops waiting for the late part and passes both changesets.
        let passed = test_support::eventually(Duration::from_secs(30), || async {
            let watermark: Option<i64> =
                sqlx::query_scalar("SELECT watermark FROM sync.materializer_state")
                    .fetch_optional(&api.pool)
                    .await
                    .unwrap();
            watermark.unwrap_or(0) as u64 >= between
        })
        .await;
        assert!(
            passed,
            "the materializer did not pass the split transaction"
        );
    }

    // The client resumes from that cursor, as a browser's EventSource does.
    let mut sse = Sse::open(
        reqwest::Client::new()
            .get(format!("{}/sync/stream", streamer.base_url))
            .bearer_auth(&token)
            .header("last-event-id", &cursor),
    )
    .await;
    let mut resumed = LocalCopy::default();
    drain(&mut sse, &mut resumed, Duration::from_millis(700)).await;
    let late_part = publish(
        team_scope.clone(),
        part(1, &team_scope, entry_row("late part", Some(&team_id))),
    )
    .await;
    read_until(&mut sse, &mut resumed, "change").await;
    drain(&mut sse, &mut resumed, Duration::from_millis(700)).await;
    assert!(
        !titles(&resumed).contains(&"between".to_owned()),
        "the changeset sent before the cut came again: {:?}",
        resumed.received
    );
    let mut got = titles(&resumed);
    got.sort();
    assert_eq!(got, ["first part", "late part"]);
    assert!(
        resumed
            .received
            .values()
            .all(|versions| versions.len() == 1),
        "a row version twice: {:?}",
        resumed.received
    );
    if transaction_wait >= Duration::from_secs(5) {
        // Live, the waiting transaction arrives whole: one frame with both parts.
        assert_eq!(resumed.kinds.get("change"), Some(&1), "{:?}", resumed.kinds);
    }
    assert_eq!(
        resumed.position.as_deref(),
        Some(late_part.to_string().as_str())
    );

    stop(streamer, api).await;
}
