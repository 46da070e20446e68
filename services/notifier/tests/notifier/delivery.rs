//! Delivering to SuprSend: the request shape, retries, and dead letters.

use std::time::Duration;

use bus::{Meta, Msg, State};
use messages::journal::v1::PromptDue;
use notifier::NotifierState;
use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;
use test_support::{eventually, nats_url};
use uuid::Uuid;

use crate::fixtures::Fixture;
use crate::support::suprsend_standin::Failure;

fn prompt_due(user_id: Uuid) -> PromptDue {
    PromptDue {
        prompt_id: Uuid::new_v4().to_string(),
        user_id: user_id.to_string(),
        email: "ada@example.com".into(),
        name: "Ada".into(),
        prompt_text: "What made you smile today?".into(),
        team_id: String::new(),
        team_name: String::new(),
        local_date: "2026-03-02".into(),
        scheduled_at_ms: 1_772_438_400_000,
        timezone: "Europe/Berlin".into(),
    }
}

#[tokio::test]
async fn prompt_due_is_sent_once_in_suprsends_request_shape() {
    let fixture = Fixture::start(|_| {}).await;
    let user_id = Uuid::new_v4();
    let event = prompt_due(user_id);
    let message_id = Uuid::now_v7().to_string();
    fixture.bus.publish(&event, &message_id).await.unwrap();
    let key = format!("prompt.due:{message_id}");
    fixture
        .wait_status(&key, "delivered", Duration::from_secs(20))
        .await;

    let received = fixture.stand_in.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].path, "/trigger/");
    assert_eq!(
        received[0].authorization.as_deref(),
        Some("Bearer test-suprsend-key")
    );
    assert_eq!(
        received[0].body,
        json!({
            "workflow": "daily-prompt",
            "recipients": [{"distinct_id": user_id.to_string(), "$email": ["ada@example.com"], "name": "Ada"}],
            "data": {
                "prompt_id": event.prompt_id,
                "prompt_text": "What made you smile today?",
                "local_date": "2026-03-02",
                "scheduled_at": 1_772_438_400_000_i64,
                "timezone": "Europe/Berlin"
            },
            "$idempotency_key": key
        })
    );
    let attempts = fixture.attempts(&key).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (attempts[0].1.as_str(), attempts[0].2),
        ("accepted", Some(202))
    );
    assert!(attempts[0].3 >= 0);

    // The same message delivered again (a lost ack, a re-drive): nothing is sent.
    let state = NotifierState::new(fixture.pool.clone(), &fixture.config).unwrap();
    let meta = Meta {
        message_id: message_id.clone(),
        subject: "events.prompt.due".into(),
        attempt: 2,
        stream_sequence: None,
        emitted_at_micros: None,
        handler: "notifier--prompt_due".into(),
    };
    notifier::handlers::prompt_due(State(state), Msg(event), meta)
        .await
        .unwrap();
    assert_eq!(fixture.stand_in.received().len(), 1);
    assert_eq!(fixture.status(&key).await, Some(("delivered".into(), 1)));
    fixture.stop().await;
}

#[tokio::test]
async fn an_answer_lost_to_a_timeout_is_retried_and_suprsend_runs_it_once() {
    let fixture = Fixture::start(|config| {
        config.suprsend_timeout = Duration::from_millis(700);
    })
    .await;
    // SuprSend takes the request but answers after the client gave up.
    fixture
        .stand_in
        .fail_next(Failure::SlowAccept(Duration::from_millis(1500)));
    let message_id = Uuid::now_v7().to_string();
    fixture
        .bus
        .publish(&prompt_due(Uuid::new_v4()), &message_id)
        .await
        .unwrap();
    let key = format!("prompt.due:{message_id}");
    fixture
        .wait_status(&key, "delivered", Duration::from_secs(20))
        .await;
    let reached = eventually(Duration::from_secs(5), || async {
        fixture.stand_in.received().len() == 2
    })
    .await;
    assert!(reached, "{:?}", fixture.stand_in.received());
    for request in fixture.stand_in.received() {
        assert_eq!(request.body["$idempotency_key"], json!(key));
    }
    assert_eq!(fixture.stand_in.runs().len(), 1, "SuprSend ran it once");
    let outcomes: Vec<String> = fixture
        .attempts(&key)
        .await
        .into_iter()
        .map(|attempt| attempt.1)
        .collect();
    assert_eq!(outcomes, ["timeout", "accepted"]);
    fixture.stop().await;
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_honouring_retry_after() {
    let fixture = Fixture::start(|_| {}).await;
    fixture.stand_in.fail_next(Failure::Status {
        status: 429,
        retry_after: Some("3".into()),
        body: r#"{"message":"slow down"}"#.into(),
    });
    fixture.stand_in.fail_next(Failure::Status {
        status: 500,
        retry_after: None,
        body: "upstream exploded".into(),
    });
    let message_id = Uuid::now_v7().to_string();
    fixture
        .bus
        .publish(&prompt_due(Uuid::new_v4()), &message_id)
        .await
        .unwrap();
    let key = format!("prompt.due:{message_id}");
    fixture
        .wait_status(&key, "delivered", Duration::from_secs(30))
        .await;
    let received = fixture.stand_in.received();
    let statuses: Vec<u16> = received.iter().map(|request| request.status).collect();
    assert_eq!(statuses, [429, 500, 202]);
    // The first retry waited for Retry-After (3 s), longer than the 1 s backoff.
    let waited = received[1].at - received[0].at;
    assert!(
        waited >= Duration::from_millis(2900),
        "retried after {waited:?}"
    );
    let attempts = fixture.attempts(&key).await;
    let summary: Vec<(i32, &str, Option<i16>)> = attempts
        .iter()
        .map(|(attempt, outcome, status, _)| (*attempt, outcome.as_str(), *status))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "retryable", Some(429)),
            (2, "retryable", Some(500)),
            (3, "accepted", Some(202))
        ]
    );
    assert_eq!(fixture.stand_in.runs().len(), 1);
    fixture.stop().await;
}

#[tokio::test]
async fn other_client_errors_are_dead_lettered_with_the_response_body() {
    let fixture = Fixture::start(|_| {}).await;
    fixture.stand_in.fail_next(Failure::Status {
        status: 422,
        retry_after: None,
        body: r#"{"message":"workflow daily-prompt is not live"}"#.into(),
    });
    let message_id = Uuid::now_v7().to_string();
    fixture
        .bus
        .publish(&prompt_due(Uuid::new_v4()), &message_id)
        .await
        .unwrap();
    let dead = eventually(Duration::from_secs(20), || async {
        dead_letter(&fixture.pool, "notifier--prompt_due")
            .await
            .is_some()
    })
    .await;
    assert!(dead, "{:?}", fixture.stand_in.received());
    let (last_error, attempts) = dead_letter(&fixture.pool, "notifier--prompt_due")
        .await
        .unwrap();
    assert!(last_error.contains("422"), "{last_error}");
    assert!(
        last_error.contains("workflow daily-prompt is not live"),
        "{last_error}"
    );
    assert_eq!(attempts, 1);
    let key = format!("prompt.due:{message_id}");
    assert_eq!(fixture.status(&key).await, Some(("rejected".into(), 1)));
    // Not retried: the message is settled (no redelivery scheduled) after one request.
    let streams = ["EVENTS", "TASKS", "CHANGES"].map(|base| fixture.bus.stream_name(base));
    assert!(
        test_support::consumers_settled(&nats_url(), &streams, Duration::from_secs(30)).await,
        "the notifier's consumer did not settle"
    );
    assert_eq!(fixture.stand_in.received().len(), 1);
    fixture.stop().await;
}

#[tokio::test]
async fn a_wrong_api_key_is_refused_and_dead_lettered() {
    let fixture = Fixture::start(|config| {
        config.suprsend_api_key = Some(SecretString::from("not-the-key"));
    })
    .await;
    fixture
        .bus
        .publish(&prompt_due(Uuid::new_v4()), &Uuid::now_v7().to_string())
        .await
        .unwrap();
    let dead = eventually(Duration::from_secs(20), || async {
        dead_letter(&fixture.pool, "notifier--prompt_due")
            .await
            .is_some_and(|(error, _)| error.contains("401"))
    })
    .await;
    assert!(dead, "{:?}", fixture.stand_in.received());
    assert_eq!(fixture.stand_in.runs().len(), 0);
    fixture.stop().await;
}

async fn dead_letter(pool: &PgPool, handler: &str) -> Option<(String, i32)> {
    sqlx::query_as("SELECT last_error, attempts FROM dead_letters WHERE handler = $1")
        .bind(handler)
        .fetch_optional(pool)
        .await
        .unwrap()
}
