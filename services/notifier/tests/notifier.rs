//! The notifier against real Postgres and NATS and a local SuprSend stand-in that checks
//! auth and the request shape and fails on request: delivery and request shape, idempotency
//! (a redelivery never sends twice), retries of 429/5xx/timeouts honouring `Retry-After`,
//! dead letters for other client errors, user identification.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use bus::{Bus, Meta, Msg, State};
use messages::journal::v1::{
    ExportReady, PromptDue, RetentionPurgeDue, TeamInvitationCreated, UserCreated,
    UserProfileUpdated,
};
use notifier::{Config, NotifierState};
use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;
use support::suprsend_standin::{Failure, StandIn};
use test_support::{TestDb, eventually, nats_url};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const KEY: &str = "test-suprsend-key";

struct Fixture {
    _db: TestDb,
    pool: PgPool,
    bus: Bus,
    stand_in: StandIn,
    config: Config,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), notifier::Error>>,
}

impl Fixture {
    async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new().await;
        let stand_in = StandIn::start(KEY).await;
        let namespace = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        let mut config = Config::for_tests(db.url(), &nats_url());
        config.suprsend_base_url = stand_in.base_url.clone();
        config.suprsend_api_key = Some(SecretString::from(KEY));
        config.common.bus_namespace = namespace.clone();
        configure(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ready_url = format!("http://{}/readyz", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(notifier::run(config.clone(), listener, shutdown.clone()));
        let ready = eventually(Duration::from_secs(30), || {
            let url = ready_url.clone();
            async move { test_support::get(&url).await.0 == 200 }
        })
        .await;
        assert!(ready, "the notifier never became ready");
        let client = async_nats::connect(nats_url()).await.unwrap();
        let bus = Bus::start(async_nats::jetstream::new(client), &namespace, "tests")
            .await
            .unwrap();
        let pool = platform::db::connect(
            &SecretString::from(db.url().to_owned()),
            notifier::SCHEMA,
            2,
        )
        .await
        .unwrap();
        Self {
            _db: db,
            pool,
            bus,
            stand_in,
            config,
            shutdown,
            handle,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        test_support::assert_stops_ok("the notifier", Duration::from_secs(15), self.handle).await;
        let _ = self.bus.delete_streams().await;
    }

    async fn status(&self, key: &str) -> Option<(String, i32)> {
        sqlx::query_as("SELECT status, attempts FROM notifications WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
    }

    async fn wait_status(&self, key: &str, status: &str, timeout: Duration) {
        let reached = eventually(timeout, || async {
            self.status(key)
                .await
                .is_some_and(|(found, _)| found == status)
        })
        .await;
        assert!(
            reached,
            "{key} never became {status}: {:?}; requests: {:?}",
            self.status(key).await,
            self.stand_in.received()
        );
    }

    /// (attempt, outcome, http_status, latency_ms) of every attempt, in order.
    async fn attempts(&self, key: &str) -> Vec<(i32, String, Option<i16>, i32)> {
        sqlx::query_as(
            "SELECT attempt, outcome, http_status, latency_ms FROM delivery_attempts
              WHERE idempotency_key = $1 ORDER BY attempted_at, attempt",
        )
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

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

#[tokio::test]
async fn users_are_identified_and_invitations_and_exports_reach_them() {
    let fixture = Fixture::start(|_| {}).await;
    let user_id = Uuid::new_v4();
    let publish = |version: i64, name: &str| UserProfileUpdated {
        user_id: user_id.to_string(),
        email: "grace@example.com".into(),
        name: name.into(),
        timezone: "Europe/Paris".into(),
        version,
    };
    fixture
        .bus
        .publish(
            &UserCreated {
                user_id: user_id.to_string(),
                via: "dev".into(),
                email: "grace@example.com".into(),
                name: "Grace".into(),
                timezone: "UTC".into(),
                version: 1,
            },
            &Uuid::now_v7().to_string(),
        )
        .await
        .unwrap();
    let profile_named = |name: &'static str| {
        let stand_in = fixture.stand_in.clone();
        move || {
            let stand_in = stand_in.clone();
            async move {
                stand_in
                    .profiles()
                    .iter()
                    .any(|(_, profile)| profile["name"] == json!(name))
            }
        }
    };
    assert!(eventually(Duration::from_secs(20), profile_named("Grace")).await);
    let (distinct_id, profile) = fixture.stand_in.profiles()[0].clone();
    assert_eq!(distinct_id, user_id.to_string());
    assert_eq!(
        profile,
        json!({"$email": ["grace@example.com"], "name": "Grace", "$timezone": "UTC"})
    );

    fixture
        .bus
        .publish(&publish(3, "Grace Hopper"), &Uuid::now_v7().to_string())
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(20), profile_named("Grace Hopper")).await);
    // A late, older profile is recorded nowhere and sent nowhere.
    let stale_id = Uuid::now_v7().to_string();
    fixture
        .bus
        .publish(&publish(2, "Stale Name"), &stale_id)
        .await
        .unwrap();
    // Wait until the stale event was handled (delivered and acked), then look.
    let handled = eventually(Duration::from_secs(10), || {
        consumer_idle(&fixture.bus, "notifier--user_profile_updated")
    })
    .await;
    assert!(handled);
    assert_eq!(fixture.stand_in.profiles().len(), 2);
    let name: String = sqlx::query_scalar("SELECT name FROM recipients WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(&fixture.pool)
        .await
        .unwrap();
    assert_eq!(name, "Grace Hopper");

    // An export for that user carries the address and name the notifier learnt.
    fixture
        .bus
        .publish(
            &ExportReady {
                export_id: "export-1".into(),
                user_id: user_id.to_string(),
                download_url: "http://127.0.0.1:9/exports/export-1.json?sig=x".into(),
                expires_at_ms: 1_800_000_000_000,
                size_bytes: 1234,
            },
            &Uuid::now_v7().to_string(),
        )
        .await
        .unwrap();
    // Invitations: one to the known address (their account), one to a stranger.
    for (invitation, email) in [("inv-1", "GRACE@example.com"), ("inv-2", "new@example.com")] {
        fixture
            .bus
            .publish(
                &TeamInvitationCreated {
                    team_invitation_id: invitation.into(),
                    team_id: "team-1".into(),
                    team_name: "Navy".into(),
                    email: email.into(),
                    role: "member".into(),
                    invited_by_user_id: "someone".into(),
                    invited_by_name: "Ada".into(),
                    expires_at_ms: 1_800_000_000_000,
                },
                &Uuid::now_v7().to_string(),
            )
            .await
            .unwrap();
    }
    let all_sent = eventually(Duration::from_secs(20), || async {
        fixture.stand_in.runs().len() == 3
    })
    .await;
    assert!(all_sent, "{:?}", fixture.stand_in.received());
    let runs = fixture.stand_in.runs();
    let by_workflow = |workflow: &str| -> Vec<serde_json::Value> {
        runs.iter()
            .filter(|run| run["workflow"] == json!(workflow))
            .cloned()
            .collect()
    };
    let export = &by_workflow("export-ready")[0];
    assert_eq!(
        export["recipients"],
        json!([{"distinct_id": user_id.to_string(), "$email": ["grace@example.com"], "name": "Grace Hopper"}])
    );
    assert_eq!(
        export["data"]["download_url"],
        json!("http://127.0.0.1:9/exports/export-1.json?sig=x")
    );
    let mut invitations = by_workflow("team-invitation");
    invitations.sort_by_key(|run| run["data"]["team_invitation_id"].to_string());
    assert_eq!(
        invitations[0]["recipients"][0]["distinct_id"],
        json!(user_id.to_string())
    );
    assert_eq!(
        invitations[1]["recipients"][0]["distinct_id"],
        json!("new@example.com")
    );
    assert_eq!(invitations[1]["data"]["team_name"], json!("Navy"));
    fixture.stop().await;
}

#[tokio::test]
async fn the_daily_purge_removes_old_history_and_sent_outbox_rows() {
    let fixture = Fixture::start(|config| {
        config.history_retention = Duration::from_secs(30 * 86_400);
    })
    .await;
    for (key, age_days) in [("old", 40), ("recent", 1)] {
        sqlx::query(
            "INSERT INTO notifications (idempotency_key, message_id, kind, workflow, distinct_id,
                                        status, attempts, created_at)
             VALUES ($1, $1, 'workflow', 'daily-prompt', 'u', 'delivered', 1,
                     now() - make_interval(days => $2))",
        )
        .bind(key)
        .bind(age_days)
        .execute(&fixture.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO delivery_attempts (delivery_attempt_id, idempotency_key, attempt, outcome,
                                            http_status, latency_ms)
             VALUES (gen_random_uuid(), $1, 1, 'accepted', 202, 5)",
        )
        .bind(key)
        .execute(&fixture.pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO outbox (outbox_id, subject, payload, sent_at)
         VALUES (gen_random_uuid(), 'events.old', '', now() - interval '2 days')",
    )
    .execute(&fixture.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO processed_messages (handler, message_id, processed_at)
         VALUES ('h', 'old', now() - interval '40 days'), ('h', 'recent', now())",
    )
    .execute(&fixture.pool)
    .await
    .unwrap();
    fixture
        .bus
        .publish(
            &RetentionPurgeDue {
                cron_run_id: Uuid::now_v7().to_string(),
                scheduled_for_ms: chrono::Utc::now().timestamp_millis(),
            },
            &Uuid::now_v7().to_string(),
        )
        .await
        .unwrap();
    let count = |sql: &'static str| {
        let pool = fixture.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    // Notifications go last in the handler: once they are purged, everything is.
    let purged = eventually(Duration::from_secs(20), || async {
        count("SELECT count(*) FROM notifications").await == 1
    })
    .await;
    assert!(purged);
    assert_eq!(
        count("SELECT count(*) FROM outbox WHERE subject = 'events.old'").await,
        0
    );
    let keys: Vec<String> = sqlx::query_scalar("SELECT idempotency_key FROM notifications")
        .fetch_all(&fixture.pool)
        .await
        .unwrap();
    assert_eq!(keys, ["recent"]);
    assert_eq!(count("SELECT count(*) FROM delivery_attempts").await, 1);
    let processed: Vec<String> =
        sqlx::query_scalar("SELECT message_id FROM processed_messages WHERE handler = 'h'")
            .fetch_all(&fixture.pool)
            .await
            .unwrap();
    assert_eq!(processed, ["recent"]);
    fixture.stop().await;
}

async fn dead_letter(pool: &PgPool, handler: &str) -> Option<(String, i32)> {
    sqlx::query_as("SELECT last_error, attempts FROM dead_letters WHERE handler = $1")
        .bind(handler)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// The consumer has delivered everything and holds no unacknowledged message.
async fn consumer_idle(bus: &Bus, consumer: &str) -> bool {
    let Ok(stream) = bus.jetstream().get_stream(bus.stream_name("EVENTS")).await else {
        return false;
    };
    let Ok(mut consumer) = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(consumer)
        .await
    else {
        return false;
    };
    let Ok(info) = consumer.info().await else {
        return false;
    };
    info.num_pending == 0 && info.num_ack_pending == 0 && info.delivered.stream_sequence > 0
}
