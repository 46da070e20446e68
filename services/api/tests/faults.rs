//! The api's production paths when what it depends on fails: Google's token endpoint failing
//! or never answering during a sign-in, Postgres going away in the middle of a write, and a
//! shutdown in the middle of a write. Real HTTP to a stand-in provider, a real Postgres whose
//! backend is terminated (or whose server is stopped) while a transaction is held at a known
//! point by a test-only trigger.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "support/oidc_provider.rs"]
mod oidc_provider;

use std::time::{Duration, Instant};

use common::{TestApi, TestUser};
use oidc_provider::{Faults, Identity, StandInProvider, TokenAnswer};
use reqwest::header::{COOKIE, LOCATION, RETRY_AFTER, SET_COOKIE};
use serde_json::{Value, json};

const APP: &str = "http://localhost:3000";

/// The api's bound on one call to the provider in these tests (`GOOGLE_HTTP_TIMEOUT_SECONDS`).
const GOOGLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest any answer may take here: far above every bound the api sets itself.
const ANSWER_BOUND: Duration = Duration::from_secs(30);

/// A silent provider's sign-in ends well before the api's HTTP client would give up on its
/// own (15 s): `GOOGLE_HTTP_TIMEOUT_SECONDS` is what bounds it.
const SILENT_PROVIDER_BOUND: Duration = Duration::from_secs(12);

// ---------------------------------------------------------------------------------------------
// Google's token endpoint

/// The `name=value` pairs of a response's `Set-Cookie` headers.
fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.split(';').next())
        .map(str::to_owned)
        .collect()
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(LOCATION)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

/// A browser's sign-in up to the callback: start, the provider's consent, then the callback
/// with the state cookie. Returns the callback's answer and how long it took.
async fn sign_in(api: &TestApi) -> (reqwest::Response, Duration) {
    let start = api
        .client
        .get(format!("{}/auth/google/start", api.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 303, "start redirects to the provider");
    let state_cookie = set_cookies(&start)
        .into_iter()
        .find(|pair| pair.starts_with("oauth_state="))
        .expect("the state cookie");
    let at_provider = api.client.get(location(&start)).send().await.unwrap();
    assert_eq!(at_provider.status(), 302, "the provider redirects back");
    let started = Instant::now();
    let callback = api
        .client
        .get(location(&at_provider))
        .header(COOKIE, &state_cookie)
        .timeout(ANSWER_BOUND * 2)
        .send()
        .await
        .expect("the callback answers");
    (callback, started.elapsed())
}

async fn count(api: &TestApi, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&api.pool).await.unwrap()
}

/// How many messages the api emitted (events and changesets), in the outbox or already
/// published: the relay deletes the rows it publishes, so the table alone does not say.
async fn emitted_count(api: &TestApi) -> usize {
    api.emitted("EVENTS", "events.").await.len() + api.emitted("CHANGES", "changes.").await.len()
}

/// Google's token endpoint answering 500 with an HTML page, a cut-off JSON body, nothing at
/// all, or headers and then no body: each sign-in lands on the app with
/// `authError=token_exchange_failed` (as the other refusals do), without a session cookie or
/// any user, session or event written, and within `GOOGLE_HTTP_TIMEOUT_SECONDS` when Google
/// is silent (it was a fixed 15 s, not configurable). Google answering again signs in at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_silent_google_token_endpoint_ends_in_an_app_error_without_a_session() {
    let provider = StandInProvider::start().await;
    let api = {
        let provider = provider.clone();
        TestApi::start_at(move |config, base_url| {
            let mut google = provider.google_config(base_url);
            google.http_timeout = GOOGLE_TIMEOUT;
            config.google = Some(google);
        })
        .await
    };
    provider.sign_in_as(Identity {
        sub: "google-sub-faults".to_owned(),
        email: "faults@example.com".to_owned(),
        email_verified: true,
        name: "Faults".to_owned(),
    });
    for answer in [
        TokenAnswer::ServerError,
        TokenAnswer::Garbled,
        TokenAnswer::Silence,
        TokenAnswer::StalledBody,
    ] {
        provider.set_faults(Faults {
            token_answer: answer,
            ..Faults::default()
        });
        let asked = provider.token_requests();
        let (callback, took) = sign_in(&api).await;
        assert_eq!(
            provider.token_requests(),
            asked + 1,
            "{answer:?}: the api called the token endpoint once"
        );
        assert_eq!(callback.status(), 303, "{answer:?}");
        let landing = location(&callback);
        assert_eq!(
            landing,
            format!("{APP}/?authError=token_exchange_failed"),
            "{answer:?}"
        );
        let cookies = set_cookies(&callback);
        assert_eq!(
            cookies,
            vec!["oauth_state=".to_owned()],
            "{answer:?}: only the state cookie, cleared"
        );
        assert!(
            took < ANSWER_BOUND,
            "{answer:?}: the callback took {took:?}"
        );
        if matches!(answer, TokenAnswer::Silence | TokenAnswer::StalledBody) {
            assert!(
                took >= GOOGLE_TIMEOUT,
                "{answer:?}: answered after {took:?}, before the provider timed out"
            );
            assert!(
                took < SILENT_PROVIDER_BOUND,
                "{answer:?}: answered after {took:?}, not bounded by the setting"
            );
        }
    }
    assert_eq!(count(&api, "SELECT count(*) FROM users").await, 0);
    assert_eq!(count(&api, "SELECT count(*) FROM sessions").await, 0);
    assert_eq!(emitted_count(&api).await, 0);
    assert_eq!(
        count(&api, "SELECT count(*) FROM oauth_states").await,
        0,
        "every state was used up"
    );
    assert_eq!(provider.exchanges(), 4);

    provider.set_faults(Faults::default());
    let (callback, _) = sign_in(&api).await;
    assert_eq!(location(&callback), format!("{APP}/"));
    assert!(
        set_cookies(&callback)
            .iter()
            .any(|pair| pair.starts_with("session=") && pair.len() > "session=".len()),
        "signed in once Google answers"
    );
    assert_eq!(count(&api, "SELECT count(*) FROM users").await, 1);
    api.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Postgres going away in the middle of a write

/// Hold every outbox insert of the bus message `name` in `pg_sleep` (a trigger made by this
/// test, in its own database): a write that emits it stops there, inside its transaction,
/// after its earlier statements.
async fn hold_outbox_inserts(pool: &sqlx::PgPool, name: &str) {
    delay_outbox_inserts(pool, name, 120).await;
}

/// Like [`hold_outbox_inserts`], for `seconds` only: the write then goes on by itself.
async fn delay_outbox_inserts(pool: &sqlx::PgPool, name: &str, seconds: u32) {
    sqlx::query(&format!(
        "CREATE FUNCTION hold_outbox_insert() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep({seconds}); RETURN NEW; END $$"
    ))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(&format!(
        "CREATE TRIGGER hold_outbox_insert BEFORE INSERT ON outbox FOR EACH ROW
         WHEN (NEW.headers->>'Bus-Message' = '{name}') EXECUTE FUNCTION hold_outbox_insert()"
    ))
    .execute(pool)
    .await
    .unwrap();
}

async fn release_outbox_inserts(pool: &sqlx::PgPool) {
    sqlx::query("DROP TRIGGER hold_outbox_insert ON outbox")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("DROP FUNCTION hold_outbox_insert()")
        .execute(pool)
        .await
        .unwrap();
}

/// The backend of the write held in the trigger (not one of `gone`), once it is there.
async fn held_backend(pool: &sqlx::PgPool, gone: &[i32]) -> i32 {
    let deadline = Instant::now() + ANSWER_BOUND;
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event = 'PgSleep'
                AND pid <> ALL($1)",
        )
        .bind(gone)
        .fetch_optional(pool)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(Instant::now() < deadline, "no write reached the trigger");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An answer with its `Retry-After`.
struct Answered {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

/// Send `request` in a task of its own (it is held by the trigger until the test acts).
fn in_flight(request: reqwest::RequestBuilder) -> tokio::task::JoinHandle<Answered> {
    tokio::spawn(async move {
        let response = request.timeout(ANSWER_BOUND).send().await.unwrap();
        Answered {
            status: response.status().as_u16(),
            retry_after: response
                .headers()
                .get(RETRY_AFTER)
                .map(|value| value.to_str().unwrap().to_owned()),
            body: response.json().await.unwrap_or(Value::Null),
        }
    })
}

fn rpc(api: &TestApi, user: &TestUser, procedure: &str, input: Value) -> reqwest::RequestBuilder {
    api.client
        .post(format!("{}/rpc/{procedure}", api.base_url))
        .bearer_auth(&user.token)
        .json(&json!({ "json": input }))
}

/// 503 `SERVICE_UNAVAILABLE` with `Retry-After`, in the RPC envelope or (open API) without.
fn assert_unavailable(answered: &Answered, what: &str) {
    assert_eq!(answered.status, 503, "{what}: {}", answered.body);
    assert_eq!(
        answered.retry_after.as_deref(),
        Some(
            api::http::error::UNAVAILABLE_RETRY_AFTER_SECONDS
                .to_string()
                .as_str()
        ),
        "{what}"
    );
    let error = answered.body.get("json").unwrap_or(&answered.body);
    assert_eq!(
        error["code"], "SERVICE_UNAVAILABLE",
        "{what}: {}",
        answered.body
    );
}

/// `journalEntries/create` (and the open API's `POST /api/v1/journal-entries`, the same
/// write) whose backend is terminated while the transaction is held after inserting the entry,
/// at its event's outbox insert: 503 with `Retry-After` (it was a 500 INTERNAL_SERVER_ERROR:
/// the outbox's Postgres error was not judged as one), neither the entry nor any outbox row
/// of it exists, and the next write goes through normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_entry_write_whose_backend_is_terminated_midway_is_503_and_writes_nothing() {
    let api = TestApi::start().await;
    let user = api.login("midway@example.com").await;
    let team_id = api.team_with(&user, &[]).await;
    let key = api.api_key_of(&user, &team_id, "midway").await.key;
    let entries = "SELECT count(*) FROM journal_entries";
    let outbox_before = emitted_count(&api).await;
    assert_eq!(count(&api, entries).await, 0);

    hold_outbox_inserts(&api.pool, "journal_entry.created").await;
    let requests = [
        (
            "RPC journalEntries/create",
            rpc(
                &api,
                &user,
                "journalEntries/create",
                json!({"title": "held", "content": "c"}),
            ),
        ),
        (
            "POST /api/v1/journal-entries",
            api.client
                .post(format!("{}/api/v1/journal-entries", api.base_url))
                .header("x-api-key", &key)
                .json(&json!({"title": "held", "content": "c"})),
        ),
    ];
    let mut terminated_pids = Vec::new();
    for (what, request) in requests {
        let answer = in_flight(request);
        let pid = held_backend(&api.pool, &terminated_pids).await;
        terminated_pids.push(pid);
        let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&api.pool)
            .await
            .unwrap();
        assert!(terminated, "{what}");
        assert_unavailable(&answer.await.unwrap(), what);
    }
    release_outbox_inserts(&api.pool).await;
    assert_eq!(count(&api, entries).await, 0, "no entry was written");
    assert_eq!(
        emitted_count(&api).await,
        outbox_before,
        "no message emitted"
    );

    let created = api
        .call(
            Some(&user),
            "journalEntries/create",
            json!({"title": "after", "content": "c"}),
        )
        .await
        .ok();
    let listed = api
        .query(Some(&user), "journalEntries/list", Value::Null)
        .await
        .ok();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["journalEntryId"], created["journalEntryId"]);
    assert_eq!(api.events_named("journal_entry.created").await, 1);
    let rest = api
        .client
        .post(format!("{}/api/v1/journal-entries", api.base_url))
        .header("x-api-key", &key)
        .json(&json!({"title": "after", "content": "c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 201);
    assert_eq!(count(&api, entries).await, 2);
    api.stop().await;
}

/// `teams/create` (the team, the creator's membership, then their event and changesets)
/// held at its first outbox insert while its Postgres server stops: 503 with `Retry-After`
/// (it was a 500), and once the server is back neither the team nor the membership nor any
/// outbox row of them exists; the next `teams/create` goes through normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_write_whose_postgres_stops_midway_is_503_and_writes_nothing() {
    let mut postgres = test_support::PrivatePostgres::start();
    let api = TestApi::start_on(test_support::TestDb::on_server(&postgres.admin_url()).await).await;
    let user = api.login("team-midway@example.com").await;
    let teams = "SELECT count(*) FROM teams";
    let members = "SELECT count(*) FROM team_members";
    let outbox_before = emitted_count(&api).await;

    hold_outbox_inserts(&api.pool, "team.member_joined").await;
    let answer = in_flight(rpc(&api, &user, "teams/create", json!({"name": "Held"})));
    held_backend(&api.pool, &[]).await;
    postgres.stop();
    assert_unavailable(&answer.await.unwrap(), "teams/create");

    postgres.resume();
    let recovered = test_support::eventually(ANSWER_BOUND, || async {
        api.call(Some(&user), "users/me", Value::Null).await.status == 200
    })
    .await;
    assert!(
        recovered,
        "the api did not recover after Postgres came back"
    );
    release_outbox_inserts(&api.pool).await;
    assert_eq!(count(&api, teams).await, 0, "no team was written");
    assert_eq!(count(&api, members).await, 0, "no membership was written");
    assert_eq!(
        emitted_count(&api).await,
        outbox_before,
        "no message emitted"
    );

    let team = api
        .call(Some(&user), "teams/create", json!({"name": "After"}))
        .await
        .ok();
    assert_eq!(team["name"], "After");
    assert_eq!(team["role"], "owner");
    assert_eq!(count(&api, teams).await, 1);
    assert_eq!(count(&api, members).await, 1);
    assert_eq!(api.events_named("team.member_joined").await, 1);
    api.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown in the middle of a write

/// A `journalEntries/create` still running when shutdown begins (held 2 s at its event's
/// outbox insert, within the 5 s grace) is answered, and its event is published before the
/// api's `run` returns: the relay's final publish comes after HTTP has drained
/// (`bus::service`). Before, the api's relay stopped on the same token as HTTP, so the
/// event waited in the outbox for the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_flight_at_shutdown_has_its_event_published_before_the_api_stops() {
    let mut api = TestApi::start().await;
    let user = api.login("shutdown@example.com").await;
    delay_outbox_inserts(&api.pool, "journal_entry.created", 2).await;
    let answer = in_flight(rpc(
        &api,
        &user,
        "journalEntries/create",
        json!({"title": "late", "content": "c"}),
    ));
    held_backend(&api.pool, &[]).await;
    api.stop_service().await;
    let answered = answer.await.unwrap();
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert_eq!(
        count(&api, "SELECT count(*) FROM outbox").await,
        0,
        "a row was left in the outbox"
    );
    assert_eq!(api.events_named("journal_entry.created").await, 1);
    api.stop().await;
}
