//! The api's production paths when what it depends on fails: Google's token endpoint failing
//! or never answering during a sign-in. Real HTTP to a stand-in provider.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "support/oidc_provider.rs"]
mod oidc_provider;

use std::time::{Duration, Instant};

use common::TestApi;
use oidc_provider::{Faults, Identity, StandInProvider, TokenAnswer};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

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
    assert_eq!(count(&api, "SELECT count(*) FROM outbox").await, 0);
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
