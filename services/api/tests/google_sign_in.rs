//! Google sign-in end to end: the api's production OAuth code against a stand-in provider
//! that speaks the same protocol (authorization code + PKCE + state + nonce, ID token).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "support/oidc_provider.rs"]
mod oidc_provider;

use common::TestApi;
use oidc_provider::{Faults, Identity, StandInProvider};
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::Value;

const APP: &str = "http://localhost:3000";

fn identity(sub: &str, email: &str, verified: bool) -> Identity {
    Identity {
        sub: sub.to_owned(),
        email: email.to_owned(),
        email_verified: verified,
        name: "Grace Hopper".to_owned(),
    }
}

/// `name=value` of the named cookie in a response's `Set-Cookie` headers.
fn cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.split(';').next())
        .find(|pair| pair.starts_with(&format!("{name}=")))
        .map(str::to_owned)
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

/// The outcome of one browser round trip.
struct Flow {
    /// Where the callback sent the browser.
    landing: String,
    /// `session=<token>` when sign-in succeeded.
    session_cookie: Option<String>,
    callback_url: String,
    state_cookie: String,
}

/// Start → provider → callback, like a browser that follows redirects by hand.
async fn sign_in(api: &TestApi, return_to: Option<&str>) -> Flow {
    let mut start_url = format!("{}/auth/google/start", api.base_url);
    if let Some(target) = return_to {
        start_url.push_str(&format!("?returnTo={}", urlencode(target)));
    }
    let start = api.client.get(start_url).send().await.unwrap();
    assert_eq!(start.status(), 303, "start redirects to the provider");
    let state_cookie = cookie(&start, "oauth_state").expect("state cookie");
    let at_provider = api.client.get(location(&start)).send().await.unwrap();
    assert_eq!(at_provider.status(), 302, "the provider redirects back");
    let callback_url = location(&at_provider);
    let callback = api
        .client
        .get(&callback_url)
        .header(COOKIE, &state_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(callback.status(), 303, "callback redirects to the app");
    Flow {
        landing: location(&callback),
        session_cookie: cookie(&callback, "session").filter(|c| c != "session="),
        callback_url,
        state_cookie,
    }
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn start_api(provider: &StandInProvider) -> TestApi {
    let provider = provider.clone();
    TestApi::start_at(move |config, base_url| {
        config.google = Some(provider.google_config(base_url));
    })
    .await
}

async fn user_count(api: &TestApi) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&api.pool)
        .await
        .unwrap()
}

async fn me_with_cookie(api: &TestApi, session_cookie: &str) -> (u16, Value) {
    let response = api
        .client
        .get(format!("{}/rpc/users/me", api.base_url))
        .header(COOKIE, session_cookie)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["json"].clone())
}

#[tokio::test]
async fn sign_in_creates_the_user_then_finds_them_by_subject() {
    let provider = StandInProvider::start().await;
    let api = start_api(&provider).await;
    provider.sign_in_as(identity("google-sub-1", "Grace@Example.com", true));

    let flow = sign_in(&api, Some(&format!("{APP}/journal?tab=today"))).await;
    assert_eq!(flow.landing, format!("{APP}/journal?tab=today"));
    let session = flow.session_cookie.expect("a session cookie");
    assert_eq!(provider.exchanges(), 1);
    let authorize = provider.last_authorize_request();
    assert_eq!(authorize["code_challenge_method"], "S256");
    assert!(authorize["scope"].contains("openid") && authorize["scope"].contains("email"));
    assert!(!authorize["nonce"].is_empty());

    let (status, me) = me_with_cookie(&api, &session).await;
    assert_eq!(status, 200);
    assert_eq!(me["email"], "grace@example.com");
    assert_eq!(me["name"], "Grace Hopper");
    assert_eq!(me["emailVerified"], true);
    assert_eq!(api.events_named("user.created").await, 1);

    // Second sign-in: the same user (by subject), a second session.
    let again = sign_in(&api, None).await;
    assert_eq!(again.landing, format!("{APP}/"));
    let (_, me_again) = me_with_cookie(&api, &again.session_cookie.unwrap()).await;
    assert_eq!(me_again["userId"], me["userId"]);
    assert_eq!(api.events_named("user.created").await, 1);

    // A state is single use: replaying the callback fails and signs nobody in.
    let replay = api
        .client
        .get(&flow.callback_url)
        .header(COOKIE, &flow.state_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 403);
    assert!(cookie(&replay, "session").is_none());
    api.stop().await;
}

#[tokio::test]
async fn the_callback_needs_the_state_cookie_of_the_browser_that_started() {
    let provider = StandInProvider::start().await;
    let api = start_api(&provider).await;
    provider.sign_in_as(identity("google-sub-2", "ada@example.com", true));
    let start = api
        .client
        .get(format!("{}/auth/google/start", api.base_url))
        .send()
        .await
        .unwrap();
    let at_provider = api.client.get(location(&start)).send().await.unwrap();
    // An attacker's callback URL opened in the victim's browser (no or another state cookie).
    let without_cookie = api.client.get(location(&at_provider)).send().await.unwrap();
    assert_eq!(without_cookie.status(), 403);
    let other_cookie = api
        .client
        .get(location(&at_provider))
        .header(COOKIE, "oauth_state=somebody-elses")
        .send()
        .await
        .unwrap();
    assert_eq!(other_cookie.status(), 403);
    assert_eq!(provider.exchanges(), 0, "no code was exchanged");

    // returnTo on a foreign origin is refused before anything starts (no open redirect).
    let foreign = api
        .client
        .get(format!(
            "{}/auth/google/start?returnTo={}",
            api.base_url,
            urlencode("https://evil.example/steal")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 400);
    let body: Value = foreign.json().await.unwrap();
    assert_eq!(body["code"], "BAD_REQUEST");
    assert_eq!(body["data"]["issues"][0]["path"][0], "returnTo");
    api.stop().await;
}

#[tokio::test]
async fn id_token_nonce_and_user_refusal_end_in_an_app_error_without_a_session() {
    let provider = StandInProvider::start().await;
    let api = start_api(&provider).await;
    provider.sign_in_as(identity("google-sub-3", "linus@example.com", true));

    provider.set_faults(Faults {
        wrong_nonce: Some("replayed-nonce".to_owned()),
        ..Faults::default()
    });
    let bad_nonce = sign_in(&api, None).await;
    assert!(bad_nonce.session_cookie.is_none());
    assert!(
        bad_nonce.landing.contains("authError=invalid_id_token"),
        "{}",
        bad_nonce.landing
    );

    provider.set_faults(Faults {
        deny: true,
        ..Faults::default()
    });
    let denied = sign_in(&api, None).await;
    assert!(denied.session_cookie.is_none());
    assert!(denied.landing.contains("authError=access_denied"));
    assert_eq!(user_count(&api).await, 0);
    api.stop().await;
}

#[tokio::test]
async fn an_existing_account_is_linked_only_by_a_verified_address() {
    let provider = StandInProvider::start().await;
    let api = start_api(&provider).await;
    let existing = api.login("margaret@example.com").await;

    provider.sign_in_as(identity("google-sub-4", "margaret@example.com", false));
    let unverified = sign_in(&api, None).await;
    assert!(unverified.session_cookie.is_none());
    assert!(
        unverified.landing.contains("authError=email_not_verified"),
        "{}",
        unverified.landing
    );

    provider.sign_in_as(identity("google-sub-4", "margaret@example.com", true));
    let verified = sign_in(&api, None).await;
    let (_, me) = me_with_cookie(&api, &verified.session_cookie.unwrap()).await;
    assert_eq!(me["userId"], existing.user_id.to_string());
    assert_eq!(me["emailVerified"], true);
    let subject: Option<String> =
        sqlx::query_scalar("SELECT google_subject FROM users WHERE user_id = $1")
            .bind(existing.user_id)
            .fetch_one(&api.pool)
            .await
            .unwrap();
    assert_eq!(subject.as_deref(), Some("google-sub-4"));
    api.stop().await;
}

#[tokio::test]
async fn cookie_sessions_need_an_allowed_origin_to_change_state() {
    let provider = StandInProvider::start().await;
    let api = start_api(&provider).await;
    provider.sign_in_as(identity("google-sub-5", "barbara@example.com", true));
    let session = sign_in(&api, None).await.session_cookie.unwrap();
    let update = |origin: Option<&'static str>| {
        let mut request = api
            .client
            .post(format!("{}/rpc/users/update", api.base_url))
            .header(COOKIE, &session)
            .json(&serde_json::json!({"json": {"name": "Barbara L."}}));
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        request.send()
    };
    let no_origin = update(None).await.unwrap();
    assert_eq!(no_origin.status(), 403);
    let body: Value = no_origin.json().await.unwrap();
    assert_eq!(body["json"]["code"], "FORBIDDEN");
    assert_eq!(
        update(Some("https://evil.example")).await.unwrap().status(),
        403
    );
    let allowed = update(Some(APP)).await.unwrap();
    assert_eq!(allowed.status(), 200);
    let body: Value = allowed.json().await.unwrap();
    assert_eq!(body["json"]["name"], "Barbara L.");
    api.stop().await;
}

/// Issue 15: an unverified Google address created an account (and could claim an address its
/// holder does not own). It now signs nobody in and creates nothing.
#[tokio::test]
async fn an_unverified_google_address_never_creates_an_account() {
    let provider = StandInProvider::start().await;
    let api = start_api(&provider).await;
    provider.sign_in_as(identity(
        "google-sub-6",
        "nobody-verified@example.com",
        false,
    ));
    let flow = sign_in(&api, None).await;
    assert!(flow.session_cookie.is_none());
    assert!(
        flow.landing.contains("authError=email_not_verified"),
        "{}",
        flow.landing
    );
    assert_eq!(user_count(&api).await, 0);
    api.stop().await;
}

/// Issue 15: the ID token's signature was never checked, so any token with the right claims
/// signed anybody in. Now it is verified against the provider's JWKS (cached; a rotated key
/// is fetched when a token names it).
#[tokio::test]
async fn id_tokens_must_be_signed_by_a_key_in_the_providers_jwks() {
    let provider = StandInProvider::start().await;
    let api = start_api(&provider).await;
    provider.sign_in_as(identity("google-sub-7", "signed@example.com", true));

    provider.set_faults(Faults {
        forged_signature: true,
        ..Faults::default()
    });
    let forged = sign_in(&api, None).await;
    assert!(forged.session_cookie.is_none());
    assert!(
        forged.landing.contains("authError=invalid_id_token"),
        "{}",
        forged.landing
    );
    assert_eq!(user_count(&api).await, 0);

    provider.set_faults(Faults::default());
    assert!(sign_in(&api, None).await.session_cookie.is_some());
    assert!(sign_in(&api, None).await.session_cookie.is_some());
    let fetches = provider.jwks_fetches();
    assert_eq!(fetches, 1, "the JWKS is cached");

    // A rotation: the new key id is not cached, so the JWKS is fetched again.
    provider.rotate_key();
    assert!(sign_in(&api, None).await.session_cookie.is_some());
    assert_eq!(provider.jwks_fetches(), fetches + 1);
    api.stop().await;
}
