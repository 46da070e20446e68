//! The daily prompt end to end, on real Postgres and NATS with a local SuprSend stand-in:
//! cron's `dispatch-due-prompts` ticks (every 2 s here) → the api's task handler emits
//! `prompt.due` → the notifier triggers SuprSend's daily-prompt workflow — once, however
//! many ticks follow. The new user was identified to SuprSend on `user.created` too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use chrono::{Timelike, Utc};
use secrecy::SecretString;
use serde_json::{Value, json};
use test_support::{TestDb, eventually, nats_url};
use tokio::net::TcpListener;

const KEY: &str = "e2e-suprsend-key";

type Requests = Arc<Mutex<Vec<(String, Value)>>>;

/// Records every authorized request; 202 for triggers, 201 for profiles.
async fn stand_in() -> (String, Requests) {
    async fn record(
        State(requests): State<Requests>,
        uri: Uri,
        headers: HeaderMap,
        body: String,
    ) -> StatusCode {
        let authorized = headers
            .get("authorization")
            .is_some_and(|value| value == format!("Bearer {KEY}").as_str());
        if !authorized {
            return StatusCode::UNAUTHORIZED;
        }
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        requests.lock().unwrap().push((uri.path().to_owned(), body));
        if uri.path() == "/trigger/" {
            StatusCode::ACCEPTED
        } else {
            StatusCode::CREATED
        }
    }
    let requests = Requests::default();
    let app = Router::new()
        .route("/trigger/", post(record))
        .route("/v1/user/{id}/", post(record))
        .with_state(requests.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base_url, requests)
}

#[tokio::test]
async fn a_due_prompt_reaches_suprsend_once() {
    let db = TestDb::new().await;
    let namespace = e2e_tests::unique_namespace();
    let (suprsend_url, requests) = stand_in().await;

    let mut api_config = api::Config::for_tests(db.url(), &nats_url());
    api_config.common.bus_namespace = namespace.clone();
    let api = e2e_tests::spawn_in_process(api::SERVICE, api::SCHEMA, |listener, token| {
        api::run(api_config, listener, token)
    })
    .await;
    let mut notifier_config = notifier::Config::for_tests(db.url(), &nats_url());
    notifier_config.common.bus_namespace = namespace.clone();
    notifier_config.suprsend_base_url = suprsend_url;
    notifier_config.suprsend_api_key = Some(SecretString::from(KEY));
    let notifier =
        e2e_tests::spawn_in_process(notifier::SERVICE, notifier::SCHEMA, |listener, token| {
            notifier::run(notifier_config, listener, token)
        })
        .await;
    let services = vec![api, notifier];
    e2e_tests::wait_ready_status(&services, 200, Duration::from_secs(30)).await;

    // Ada signs up and schedules a prompt for every day at this minute (UTC); the prompt is
    // made to look a day old, since an occurrence before a prompt existed is never due.
    let client = reqwest::Client::new();
    let login =
        e2e_tests::dev_login(&client, &services[0].base_url, "ada@example.com", "Ada").await;
    let token = login.token.as_str();
    let user_id = login.user_id.to_string();
    let now = Utc::now();
    let created = test_support::rpc_ok(
        &client,
        &services[0].base_url,
        token,
        "prompts/create",
        json!({
            "text": "What are you grateful for?",
            "schedule": {"time": format!("{:02}:{:02}", now.hour(), now.minute()),
                         "timezone": "UTC", "weekdays": [1, 2, 3, 4, 5, 6, 7]}
        }),
    )
    .await;
    let prompt_id = created["promptId"].as_str().unwrap().to_owned();
    let api_pool = platform::db::connect(&SecretString::from(db.url().to_owned()), "api", 2)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE prompts SET created_at = now() - interval '1 day' WHERE prompt_id = $1::uuid",
    )
    .bind(&prompt_id)
    .execute(&api_pool)
    .await
    .unwrap();

    // Now cron starts ticking.
    let mut cron_config = cron::Config::for_tests(db.url(), &nats_url());
    cron_config.common.bus_namespace = namespace.clone();
    for job in &mut cron_config.jobs {
        if job.name() == "dispatch-due-prompts" {
            job.schedule = "*/2 * * * * *".parse().unwrap();
        } else {
            job.enabled = false;
        }
    }
    let cron = e2e_tests::spawn_in_process(cron::SERVICE, cron::SCHEMA, |listener, token| {
        cron::run(cron_config, listener, token)
    })
    .await;
    let triggers = || {
        requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(path, _)| path == "/trigger/")
            .map(|(_, body)| body.clone())
            .collect::<Vec<_>>()
    };
    let sent = eventually(Duration::from_secs(30), || {
        let found = !triggers().is_empty();
        async move { found }
    })
    .await;
    assert!(
        sent,
        "no trigger reached SuprSend: {:?}",
        requests.lock().unwrap()
    );
    let trigger = triggers()[0].clone();
    assert_eq!(trigger["workflow"], "daily-prompt");
    assert_eq!(
        trigger["recipients"],
        json!([{"distinct_id": user_id, "$email": ["ada@example.com"], "name": "Ada"}])
    );
    assert_eq!(trigger["data"]["prompt_id"], json!(prompt_id));
    assert_eq!(trigger["data"]["prompt_text"], "What are you grateful for?");
    assert!(
        trigger["$idempotency_key"]
            .as_str()
            .unwrap()
            .starts_with("prompt.due:")
    );
    // Three more ticks: still one notification.
    let cron_pool = platform::db::connect(&SecretString::from(db.url().to_owned()), "cron", 2)
        .await
        .unwrap();
    let first_runs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_runs WHERE outcome = 'succeeded'")
            .fetch_one(&cron_pool)
            .await
            .unwrap();
    let more_ticks = eventually(Duration::from_secs(20), || {
        let pool = cron_pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM job_runs WHERE outcome = 'succeeded'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
                >= first_runs + 3
        }
    })
    .await;
    assert!(more_ticks);
    // Every tick's task has gone through the api and the notifier.
    e2e_tests::wait_settled(db.url(), &namespace).await;
    assert_eq!(triggers().len(), 1, "{:?}", triggers());
    // Ada was identified on sign-up.
    let identified = requests.lock().unwrap().iter().any(|(path, body)| {
        path == &format!("/v1/user/{user_id}/") && body["$email"] == json!(["ada@example.com"])
    });
    assert!(identified, "{:?}", requests.lock().unwrap());

    cron.stop().await.unwrap();
    for service in services {
        service.stop().await.unwrap();
    }
    e2e_tests::delete_namespace(&nats_url(), &namespace).await;
}
