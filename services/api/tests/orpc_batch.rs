//! oRPC's batch protocol (`x-orpc-batch`, issue 19): the wire format of
//! `../shared/reference/orpc-wire.md` B18–B20 in both modes, per-item statuses, and what a
//! batch must not open up (CSRF, paths outside `/rpc`, spoofed connection headers, size).
//! `orpc_client.rs` runs the unmodified `@orpc/client` `BatchLinkPlugin` against the same code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{TestApi, TestUser};
use reqwest::Method;
use serde_json::{Value, json};

const HOSTILE_ORIGIN: &str = "https://evil.example";

fn url(api: &TestApi, procedure: &str) -> String {
    format!("{}/rpc/{procedure}", api.base_url)
}

/// `POST <first>/__batch__` with the items, as `BatchLinkPlugin` sends it.
async fn post_batch(
    api: &TestApi,
    user: &TestUser,
    mode: &str,
    items: &Value,
) -> reqwest::Response {
    api.client
        .post(format!(
            "{}/rpc/journalEntries/create/__batch__",
            api.base_url
        ))
        .bearer_auth(&user.token)
        .header("x-orpc-batch", mode)
        .json(items)
        .send()
        .await
        .unwrap()
}

/// The items of a streamed batch response: every `event: message` data line, in order.
fn streamed_items(body: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut event = None;
    for line in body.lines() {
        if let Some(name) = line.strip_prefix("event:") {
            event = Some(name.trim().to_owned());
        } else if let Some(data) = line.strip_prefix("data:") {
            assert_eq!(event.as_deref(), Some("message"), "{body}");
            items.push(serde_json::from_str(data.trim()).unwrap());
        } else if line.is_empty() {
            event = None;
        }
    }
    items
}

/// Items by index (they arrive in completion order).
fn by_index(items: Vec<Value>) -> Vec<Value> {
    let mut items = items;
    items.sort_by_key(|item| item["index"].as_u64().unwrap());
    let indexes: Vec<u64> = items
        .iter()
        .map(|item| item["index"].as_u64().unwrap())
        .collect();
    assert_eq!(
        indexes,
        (0..items.len() as u64).collect::<Vec<_>>(),
        "each index once"
    );
    items
}

async fn entry_count(api: &TestApi, title: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM api.journal_entries WHERE title = $1")
        .bind(title)
        .fetch_one(&api.pool)
        .await
        .unwrap()
}

fn three_calls(api: &TestApi, title: &str) -> Value {
    json!([
        { "url": url(api, "journalEntries/create"), "body": { "json": { "title": title, "content": "a" } } },
        {
            "url": url(api, "journalEntries/update"),
            "body": { "json": { "journalEntryId": "00000000-0000-4000-8000-00000000dead", "title": "x" } }
        },
        { "url": url(api, "users/me") },
    ])
}

fn assert_three_answers(items: Vec<Value>, user: &TestUser, title: &str) {
    let items = by_index(items);
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["status"], 200, "{}", items[0]);
    assert_eq!(items[0]["body"]["json"]["title"], title);
    assert_eq!(items[1]["status"], 404, "{}", items[1]);
    assert_eq!(items[1]["body"]["json"]["code"], "NOT_FOUND");
    assert_eq!(items[1]["body"]["json"]["defined"], false);
    assert_eq!(items[2]["status"], 200, "{}", items[2]);
    assert_eq!(items[2]["body"]["json"]["userId"], user.user_id.to_string());
    for item in &items {
        // Framing headers stay on the batch response, not in the items.
        assert!(item.get("headers").is_none(), "{item}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffered_batch_answers_each_call_with_its_own_status() {
    let api = TestApi::start().await;
    let user = api.login("batch-buffered@example.com").await;
    let response = post_batch(&api, &user, "buffered", &three_calls(&api, "buffered")).await;
    assert_eq!(response.status(), 207);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let items: Vec<Value> = response.json().await.unwrap();
    assert_three_answers(items, &user, "buffered");
    assert_eq!(
        entry_count(&api, "buffered").await,
        1,
        "the create ran once"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_batch_sends_one_message_event_per_call() {
    let api = TestApi::start().await;
    let user = api.login("batch-streaming@example.com").await;
    let response = post_batch(&api, &user, "streaming", &three_calls(&api, "streamed")).await;
    assert_eq!(response.status(), 207);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = response.text().await.unwrap();
    assert!(body.starts_with(':'), "opens with a comment: {body}");
    assert_three_answers(streamed_items(&body), &user, "streamed");
    assert_eq!(entry_count(&api, "streamed").await, 1);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_batch_runs_queries_and_refuses_anything_else() {
    let api = TestApi::start().await;
    let user = api.login("batch-get@example.com").await;
    let created = api
        .call(
            Some(&user),
            "journalEntries/create",
            json!({ "title": "for get", "content": "c" }),
        )
        .await
        .ok();
    let data = |input: Value| -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("data", &json!({ "json": input }).to_string())
            .finish()
    };
    let items = json!([
        { "url": format!("{}?{}", url(&api, "journalEntries/list"), data(json!({ "limit": 1 }))) },
        { "url": format!("{}?{}", url(&api, "journalEntries/get"), data(json!({ "journalEntryId": created["journalEntryId"] }))) },
        // A mutation inside a GET batch (a GET is not CSRF-checked): refused, runs nothing.
        { "url": url(&api, "journalEntries/create"), "method": "POST",
          "body": { "json": { "title": "smuggled", "content": "x" } } },
        // A mutation called with GET, as a single call would be.
        { "url": format!("{}?{}", url(&api, "journalEntries/create"), data(json!({ "title": "smuggled", "content": "x" }))) },
    ]);
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("batch", &items.to_string())
        .finish();
    let response = api
        .client
        .get(format!(
            "{}/rpc/journalEntries/list/__batch__?{query}",
            api.base_url
        ))
        .bearer_auth(&user.token)
        .header("x-orpc-batch", "buffered")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 207);
    let items = by_index(response.json().await.unwrap());
    assert_eq!(items[0]["status"], 200, "{}", items[0]);
    assert_eq!(
        items[0]["body"]["json"]["items"][0]["journalEntryId"],
        created["journalEntryId"]
    );
    assert_eq!(items[1]["status"], 200, "{}", items[1]);
    assert_eq!(items[1]["body"]["json"]["title"], "for get");
    for refused in &items[2..] {
        assert_eq!(refused["status"], 405, "{refused}");
        assert_eq!(refused["body"]["json"]["code"], "METHOD_NOT_SUPPORTED");
    }
    assert_eq!(entry_count(&api, "smuggled").await, 0);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reaches_only_procedures_and_cannot_nest() {
    let api = TestApi::start().await;
    let user = api.login("batch-paths@example.com").await;
    let items = json!([
        // The dev login is not a procedure: a batch must not reach what RPC cannot.
        { "url": format!("{}/auth/dev/login", api.base_url),
          "body": { "json": { "email": "other@example.com", "name": "o" } } },
        { "url": format!("{}/rpc/../auth/dev/login", api.base_url) },
        { "url": url(&api, "journalEntries/doesNotExist"), "body": { "json": {} } },
        // A batch inside a batch is an unknown procedure, whatever its headers say.
        { "url": url(&api, "users/me/__batch__"), "headers": { "x-orpc-batch": "buffered" },
          "body": [{ "url": url(&api, "users/me") }] },
    ]);
    let response = post_batch(&api, &user, "buffered", &items).await;
    assert_eq!(response.status(), 207);
    let items = by_index(response.json().await.unwrap());
    for item in &items {
        assert_eq!(item["status"], 404, "{item}");
        assert_eq!(item["body"]["json"]["code"], "NOT_FOUND", "{item}");
    }
    let signed_up: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api.users WHERE email = 'other@example.com'")
            .fetch_one(&api.pool)
            .await
            .unwrap();
    assert_eq!(signed_up, 0);
    api.stop().await;
}

/// A cookie session from a foreign origin is refused per call, exactly as a single call is,
/// and an item cannot claim another origin (or cookie, or client address) for itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_of_a_batch_passes_the_csrf_check_of_the_batch_request() {
    let api = TestApi::start().await;
    let user = api.login("batch-csrf@example.com").await;
    let allowed_origin = api.state.config.allowed_origins[0].clone();
    let items = json!([
        { "url": url(&api, "journalEntries/create"),
          "body": { "json": { "title": "csrf", "content": "x" } } },
        { "url": url(&api, "journalEntries/create"),
          "headers": { "origin": allowed_origin, "referer": format!("{allowed_origin}/"),
                       "sec-fetch-site": "same-origin" },
          "body": { "json": { "title": "csrf", "content": "x" } } },
        { "url": url(&api, "users/delete"), "body": { "json": {} } },
    ]);
    let response = api
        .client
        .post(format!("{}/rpc/users/delete/__batch__", api.base_url))
        .header("cookie", format!("session={}", user.token))
        .header("origin", HOSTILE_ORIGIN)
        .header("x-orpc-batch", "buffered")
        .json(&items)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 207);
    let items = by_index(response.json().await.unwrap());
    for item in &items {
        assert_eq!(item["status"], 403, "{item}");
        assert_eq!(item["body"]["json"]["code"], "FORBIDDEN", "{item}");
    }
    assert_eq!(entry_count(&api, "csrf").await, 0);
    let me = api.query(Some(&user), "users/me", Value::Null).await.ok();
    assert_eq!(
        me["userId"],
        user.user_id.to_string(),
        "the account is still there"
    );

    // The same batch from the allowed origin runs.
    let response = api
        .client
        .post(format!(
            "{}/rpc/journalEntries/create/__batch__",
            api.base_url
        ))
        .header("cookie", format!("session={}", user.token))
        .header("origin", &allowed_origin)
        .header("x-orpc-batch", "buffered")
        .json(&json!([
            { "url": url(&api, "journalEntries/create"),
              "body": { "json": { "title": "same origin", "content": "x" } } },
            { "url": url(&api, "users/me") },
        ]))
        .send()
        .await
        .unwrap();
    let items = by_index(response.json().await.unwrap());
    assert!(items.iter().all(|item| item["status"] == 200), "{items:?}");
    assert_eq!(entry_count(&api, "same origin").await, 1);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_that_are_not_well_formed_get_a_clear_error_and_run_nothing() {
    let api = TestApi::start().await;
    let user = api.login("batch-bad@example.com").await;
    let create = |n: usize| {
        json!({ "url": url(&api, "journalEntries/create"),
                "body": { "json": { "title": "too many", "content": n.to_string() } } })
    };

    let eleven: Vec<Value> = (0..11).map(create).collect();
    let response = post_batch(&api, &user, "buffered", &json!(eleven)).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["json"]["code"], "PAYLOAD_TOO_LARGE");
    let ten: Vec<Value> = (0..10).map(create).collect();
    let response = post_batch(&api, &user, "buffered", &json!(ten)).await;
    assert_eq!(response.status(), 207, "ten calls are allowed");
    assert_eq!(entry_count(&api, "too many").await, 10);

    for (body, what) in [
        (
            json!({ "url": url(&api, "users/me") }),
            "an object, not an array",
        ),
        (json!([{ "body": {} }]), "an item without url"),
        (json!([{ "url": 3 }]), "a url that is not a string"),
        (
            json!([{ "url": url(&api, "users/me"), "headers": { "x": 1 } }]),
            "a header that is a number",
        ),
    ] {
        let response = post_batch(&api, &user, "buffered", &body).await;
        assert_eq!(response.status(), 400, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["json"]["code"], "BAD_REQUEST", "{what}");
    }

    let response = post_batch(&api, &user, "sideways", &json!([])).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["json"]["data"]["issues"][0]["path"][0], "x-orpc-batch");

    for method in [Method::PUT, Method::DELETE, Method::PATCH] {
        let response = api
            .client
            .request(method.clone(), url(&api, "journalEntries/create/__batch__"))
            .bearer_auth(&user.token)
            .header("x-orpc-batch", "buffered")
            .json(&json!([create(0)]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method}");
    }
    let oversized = "x".repeat(api::http::rpc_batch::MAX_BATCH_BODY_BYTES);
    let response = post_batch(
        &api,
        &user,
        "buffered",
        &json!([{ "url": url(&api, "users/me"), "body": { "json": oversized } }]),
    )
    .await;
    assert_eq!(response.status(), 413);
    assert_eq!(entry_count(&api, "too many").await, 10, "nothing else ran");
    api.stop().await;
}

/// A call that signs out clears the cookie on the batch response too (buffered), and reports
/// it in its item's headers as oRPC does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_a_call_sets_reach_the_browser_in_buffered_mode() {
    let api = TestApi::start().await;
    let user = api.login("batch-cookie@example.com").await;
    let response = post_batch(
        &api,
        &user,
        "buffered",
        &json!([{ "url": url(&api, "auth/logout"), "body": { "json": {} } }]),
    )
    .await;
    assert_eq!(response.status(), 207);
    let cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect();
    assert!(
        cookies.iter().any(|cookie| cookie.starts_with("session=")),
        "{cookies:?}"
    );
    let items = by_index(response.json().await.unwrap());
    assert_eq!(items[0]["status"], 200, "{}", items[0]);
    assert!(
        items[0]["headers"]["set-cookie"].is_string(),
        "{}",
        items[0]
    );
    let after = api.query(Some(&user), "users/me", Value::Null).await;
    assert_eq!(after.status, 401, "signed out");
    api.stop().await;
}

/// A buffered batch holds its responses until the last one: past
/// `MAX_BUFFERED_RESPONSE_BYTES` together, an item answers `413` with the reason instead of
/// growing the request's memory; the same batch streamed answers every item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffered_batch_bounds_the_responses_it_holds() {
    let api = TestApi::start().await;
    let user = api.login("big-pages@example.com").await;
    let content = "x".repeat(100_000);
    for index in 0..100 {
        api.call(
            Some(&user),
            "journalEntries/create",
            json!({ "title": format!("big {index}"), "content": content }),
        )
        .await
        .ok();
    }
    // Three pages of 60 entries of 100,000 characters: about 6 MB each, 18 MB together.
    let page =
        json!({ "url": url(&api, "journalEntries/list"), "body": { "json": { "limit": 60 } } });
    let items = json!([page, page, page, { "url": url(&api, "users/me") }]);
    let response = post_batch(&api, &user, "buffered", &items).await;
    assert_eq!(response.status(), 207);
    let answered = by_index(response.json::<Vec<Value>>().await.unwrap());
    let statuses: Vec<u64> = answered
        .iter()
        .map(|item| item["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses[3], 200);
    let mut pages = statuses[..3].to_vec();
    pages.sort_unstable();
    assert_eq!(pages, [200, 200, 413], "{statuses:?}");
    let refused = answered.iter().find(|item| item["status"] == 413).unwrap();
    assert_eq!(refused["body"]["json"]["code"], "PAYLOAD_TOO_LARGE");
    assert!(
        refused["body"]["json"]["message"]
            .as_str()
            .unwrap()
            .contains("streaming mode"),
        "{}",
        refused["body"]["json"]["message"]
    );
    let served = answered.iter().find(|item| item["status"] == 200).unwrap();
    assert_eq!(
        served["body"]["json"]["items"].as_array().unwrap().len(),
        60
    );

    // One page of 100 (about 10 MB) passes what one item may carry: 413, not a 500.
    let whole =
        json!([{ "url": url(&api, "journalEntries/list"), "body": { "json": { "limit": 100 } } }]);
    let response = post_batch(&api, &user, "buffered", &whole).await;
    let answered = response.json::<Vec<Value>>().await.unwrap();
    assert_eq!(answered[0]["status"], 413, "{}", answered[0]["body"]);
    assert!(
        answered[0]["body"]["json"]["message"]
            .as_str()
            .unwrap()
            .contains("call this procedure alone")
    );

    let response = post_batch(&api, &user, "streaming", &items).await;
    let streamed = by_index(streamed_items(&response.text().await.unwrap()));
    assert!(
        streamed.iter().all(|item| item["status"] == 200),
        "streaming holds one response at a time"
    );
    api.stop().await;
}
