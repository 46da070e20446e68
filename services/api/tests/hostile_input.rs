//! Hostile input at the api's edge (issue 15): each case was reproduced against a running
//! system before its fix. CSRF through methods other than POST, NUL characters, timestamps
//! out of range, integers written as floats, and a Postgres outage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Answer, TestApi};
use reqwest::Method;
use serde_json::{Value, json};

const HOSTILE_ORIGIN: &str = "https://evil.example";

/// A mutation with a valid session cookie and a hostile origin, by any method but POST (and
/// GET for queries), is 405 and runs nothing: `curl -I /rpc/users/delete` used to delete
/// the account (the CSRF check exempts HEAD, and the route ran on any method).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_runs_only_on_post_whatever_the_cookie_and_origin() {
    let api = TestApi::start().await;
    let user = api.login("csrf@example.com").await;
    for procedure in [
        "users/delete",
        "auth/revokeAllSessions",
        "auth/logout",
        "exports/create",
    ] {
        for method in [
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::GET,
            Method::PATCH,
        ] {
            let response = api
                .client
                .request(method.clone(), format!("{}/rpc/{procedure}", api.base_url))
                .header("cookie", format!("session={}", user.token))
                .header("origin", HOSTILE_ORIGIN)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 405, "{method} /rpc/{procedure}");
            if method != Method::HEAD {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["json"]["code"], "METHOD_NOT_SUPPORTED");
                assert_eq!(body["json"]["status"], 405);
            }
        }
    }
    // OPTIONS is a CORS preflight, answered by the CORS layer without running anything.
    let options = api
        .client
        .request(
            Method::OPTIONS,
            format!("{}/rpc/users/delete", api.base_url),
        )
        .header("cookie", format!("session={}", user.token))
        .header("origin", HOSTILE_ORIGIN)
        .send()
        .await
        .unwrap();
    assert!(
        matches!(options.status().as_u16(), 200 | 405),
        "{}",
        options.status()
    );
    // The account, its session and its exports are all still there.
    let me = api.query(Some(&user), "users/me", Value::Null).await.ok();
    assert_eq!(me["userId"], user.user_id.to_string());
    let exports = api
        .query(Some(&user), "exports/list", Value::Null)
        .await
        .ok();
    assert_eq!(exports.as_array().map(Vec::len), Some(0), "{exports}");
    // A query still answers GET and POST, but not HEAD.
    let head = api
        .client
        .head(format!("{}/rpc/users/me", api.base_url))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 405);
    api.call(Some(&user), "users/me", Value::Null).await.ok();
    api.stop().await;
}

/// The procedures the router declares: every one is a query or a mutation, and a
/// mutation's GET is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_declared_procedure_refuses_the_methods_it_does_not_take() {
    let api = TestApi::start().await;
    let user = api.login("methods@example.com").await;
    let procedures = api::rpc_procedures();
    assert!(procedures.len() > 40, "{procedures:?}");
    for procedure in &procedures {
        let url = format!("{}{}", api.base_url, procedure.path());
        for method in [Method::HEAD, Method::PUT, Method::DELETE, Method::PATCH] {
            let response = api
                .client
                .request(method.clone(), &url)
                .bearer_auth(&user.token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 405, "{method} {url}");
        }
        let get = api
            .client
            .get(&url)
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap();
        match procedure.kind {
            api::http::rpc::Kind::Mutation => assert_eq!(get.status(), 405, "GET {url}"),
            api::http::rpc::Kind::Query => assert_ne!(get.status(), 405, "GET {url}"),
        }
    }
    api.stop().await;
}

fn issue_messages(answer: &Answer) -> Vec<String> {
    answer.json["data"]["issues"]
        .as_array()
        .map(|issues| {
            issues
                .iter()
                .map(|issue| issue["message"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A NUL character anywhere is a 400 naming the field, on every input (it was a 500:
/// Postgres refuses `\u0000` in text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_is_a_bad_request_naming_the_field() {
    let api = TestApi::start().await;
    let user = api.login("nul@example.com").await;
    let team_id = api.team_with(&user, &[]).await;
    let cases = [
        (
            "journalEntries/create",
            json!({"title": "a\u{0}b", "content": "x"}),
            "title",
        ),
        (
            "journalEntries/create",
            json!({"title": "t", "content": "x", "tags": ["ok", "b\u{0}"]}),
            "tags.1",
        ),
        ("teams/create", json!({"name": "\u{0}"}), "name"),
        (
            "teams/rename",
            json!({"teamId": team_id, "name": "x\u{0}"}),
            "name",
        ),
        (
            "teams/invite",
            json!({"teamId": team_id, "email": "a\u{0}@example.com", "role": "member"}),
            "email",
        ),
        ("users/update", json!({"name": "n\u{0}"}), "name"),
        ("prompts/create", json!({"text": "p\u{0}"}), "text"),
        ("journalEntries/list", json!({"q": "\u{0}"}), "q"),
        ("journalEntries/list", json!({"tag": "\u{0}"}), "tag"),
        (
            "logs/list",
            json!({"teamId": team_id, "pathPrefix": "/\u{0}"}),
            "pathPrefix",
        ),
        (
            "logs/list",
            json!({"teamId": team_id, "apiKeyPrefix": "\u{0}"}),
            "apiKeyPrefix",
        ),
    ];
    for (procedure, input, path) in cases {
        let answer = api.call(Some(&user), procedure, input).await;
        assert_eq!(answer.status, 400, "{procedure}: {}", answer.json);
        assert_eq!(answer.code(), "BAD_REQUEST");
        assert_eq!(answer.issue_paths(), vec![path.to_owned()], "{procedure}");
        assert!(
            issue_messages(&answer)[0].contains("NUL"),
            "{}",
            answer.json
        );
    }
    // The dev login (plain JSON).
    let response = api
        .client
        .post(format!("{}/auth/dev/login", api.base_url))
        .json(&json!({"email": "x@example.com", "name": "a\u{0}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["issues"][0]["path"], json!(["name"]));
    api.stop().await;
}

/// Epoch-millisecond inputs are bounded to 1970..=9999: outside it a 400 naming the field
/// (one value panicked with `DateTime + TimeDelta overflowed`, the others were 500s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_out_of_range_are_bad_requests_naming_the_field() {
    let api = TestApi::start().await;
    let user = api.login("time@example.com").await;
    let team_id = api.team_with(&user, &[]).await;
    for (procedure, field, value) in [
        (
            "journalEntries/list",
            "createdAfter",
            8_210_266_876_799_999_i64,
        ),
        ("journalEntries/list", "createdBefore", -210_866_803_200_001),
        (
            "journalEntries/list",
            "createdBefore",
            -8_334_601_228_800_000,
        ),
        ("journalEntries/list", "createdAfter", 253_402_300_800_000),
        ("logs/list", "from", 8_210_266_876_799_999),
        ("logs/list", "to", -8_334_601_228_800_000),
        ("logs/list", "from", -1),
    ] {
        let mut input = json!({ field: value });
        if procedure == "logs/list" {
            input["teamId"] = json!(team_id);
        }
        let answer = api.call(Some(&user), procedure, input).await;
        assert_eq!(
            answer.status, 400,
            "{procedure} {field}={value}: {}",
            answer.json
        );
        assert_eq!(answer.issue_paths(), vec![field.to_owned()]);
        assert!(
            issue_messages(&answer)[0].contains("epoch milliseconds"),
            "{}",
            answer.json
        );
    }
    // The edges themselves are fine.
    for value in [0_i64, 253_402_300_799_999] {
        for field in ["createdAfter", "createdBefore"] {
            api.call(Some(&user), "journalEntries/list", json!({ field: value }))
                .await
                .ok();
        }
    }
    // A JS Date far in the future (through `meta`) is refused the same way.
    let response = api
        .client
        .post(format!("{}/rpc/journalEntries/list", api.base_url))
        .bearer_auth(&user.token)
        .json(&json!({"json": {"createdAfter": "+275760-09-13T00:00:00.000Z"}, "meta": [[1, "createdAfter"]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    api.stop().await;
}

/// `3.0` and `1e2` are integers (as zod sees them); `3.5` is "expected an integer, received
/// 3.5", not "expected number, received number".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integral_floats_are_integers_and_fractions_say_so() {
    let api = TestApi::start().await;
    let user = api.login("ints@example.com").await;
    for _ in 0..3 {
        api.call(
            Some(&user),
            "journalEntries/create",
            json!({"title": "t", "content": "c"}),
        )
        .await
        .ok();
    }
    // Raw bodies: serde_json would print 3.0 as 3.0 but 1e2 as 100.0.
    for (body, expected_items) in [
        (r#"{"json":{"limit":2.0}}"#, 2),
        (r#"{"json":{"limit":1e0}}"#, 1),
        (r#"{"json":{"limit":1e2}}"#, 3),
    ] {
        let response = api
            .client
            .post(format!("{}/rpc/journalEntries/list", api.base_url))
            .bearer_auth(&user.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{body}");
        let page: Value = response.json().await.unwrap();
        assert_eq!(
            page["json"]["items"].as_array().unwrap().len(),
            expected_items,
            "{body}"
        );
    }
    let answer = api
        .call(Some(&user), "journalEntries/list", json!({"limit": 3.5}))
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.issue_paths(), vec!["limit".to_owned()]);
    assert_eq!(
        issue_messages(&answer),
        vec!["Invalid input: expected an integer, received 3.5".to_owned()]
    );
    assert_eq!(answer.json["data"]["issues"][0]["expected"], "int");
    // Beyond what the field holds: a range error, not a type error.
    let answer = api
        .call(Some(&user), "journalEntries/list", json!({"limit": 1e300}))
        .await;
    assert_eq!(answer.status, 400, "{}", answer.json);
    assert!(
        issue_messages(&answer)[0].contains("expected an integer"),
        "{}",
        answer.json
    );
    api.stop().await;
}

/// Postgres unreachable is `503 SERVICE_UNAVAILABLE` with `Retry-After`, on RPC and on the
/// open API: the pool's errors (here: a pool pointed at a port nobody listens on, so the
/// connect fails with an I/O error, and a pool whose acquire times out) are not bugs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_is_service_unavailable_with_retry_after() {
    use axum::response::IntoResponse;

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy(&format!(
            "postgres://nobody:nothing@127.0.0.1:{closed}/none"
        ))
        .unwrap();
    let error = api::modules::users::store::load(&pool, uuid::Uuid::new_v4())
        .await
        .unwrap_err();
    assert!(
        matches!(error, api::http::error::ApiError::Unavailable(_)),
        "{error:?}"
    );
    for response in [
        error.into_response(),
        api::http::rest::RestError(api::http::error::ApiError::from(sqlx::Error::PoolTimedOut))
            .into_response(),
    ] {
        assert_eq!(response.status(), 503);
        assert_eq!(
            response.headers()["retry-after"],
            api::http::error::UNAVAILABLE_RETRY_AFTER_SECONDS.to_string()
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        let error = body.get("json").unwrap_or(&body);
        assert_eq!(error["code"], "SERVICE_UNAVAILABLE", "{body}");
    }
    // An administrator's shutdown of the backend (SQLSTATE 57P01, "terminating connection
    // due to administrator command"), seen on a live connection.
    let api = TestApi::start().await;
    let mut victim = api.pool.acquire().await.unwrap();
    let victim_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *victim)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(victim_pid)
        .execute(&api.pool)
        .await
        .unwrap();
    let terminated = sqlx::query("SELECT 1")
        .execute(&mut *victim)
        .await
        .unwrap_err();
    assert!(
        api::http::error::is_database_unavailable(&terminated),
        "{terminated:?}"
    );
    assert_eq!(api::http::error::ApiError::from(terminated).status(), 503);
    drop(victim);
    api.stop().await;
}

/// The running service, its Postgres stopped: RPC and the open API answer 503 with
/// `Retry-After` (they answered 500 `INTERNAL_SERVER_ERROR`), and recover when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_answers_503_while_its_postgres_is_down() {
    let mut postgres = test_support::PrivatePostgres::start();
    let api = TestApi::start_on(test_support::TestDb::on_server(&postgres.admin_url()).await).await;
    let owner = api.login("outage@example.com").await;
    let team_id = api.team_with(&owner, &[]).await;
    let key = api.api_key_of(&owner, &team_id, "k").await.key;
    let whoami = || {
        api.client
            .get(format!("{}/api/v1/whoami", api.base_url))
            .header("x-api-key", &key)
            .send()
    };
    assert_eq!(whoami().await.unwrap().status(), 200);

    postgres.stop();
    let rpc = api
        .client
        .post(format!("{}/rpc/users/me", api.base_url))
        .bearer_auth(&owner.token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(rpc.status(), 503);
    assert!(rpc.headers().contains_key("retry-after"));
    let body: Value = rpc.json().await.unwrap();
    assert_eq!(body["json"]["code"], "SERVICE_UNAVAILABLE", "{body}");
    assert_eq!(body["json"]["status"], 503);
    let rest = whoami().await.unwrap();
    assert_eq!(rest.status(), 503);
    assert!(rest.headers().contains_key("retry-after"));
    let body: Value = rest.json().await.unwrap();
    assert_eq!(body["code"], "SERVICE_UNAVAILABLE", "{body}");

    postgres.resume();
    let recovered = test_support::eventually(Duration::from_secs(30), || async {
        api.call(Some(&owner), "users/me", json!(null)).await.status == 200
    })
    .await;
    assert!(
        recovered,
        "the api did not recover after Postgres came back"
    );
    api.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The wall: every procedure and every REST route, generated hostile requests.

/// A small, seedable generator (splitmix64): the run is replayed from its seed alone.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Field names the inputs use (the fuzzer also learns each procedure's required fields from
/// the server): with them, generated objects get past "unrecognized key" to the checks.
const KNOWN_KEYS: &[&str] = &[
    "limit",
    "cursor",
    "q",
    "tag",
    "tags",
    "createdAfter",
    "createdBefore",
    "from",
    "to",
    "scope",
    "deleted",
    "entryDateFrom",
    "entryDateTo",
    "title",
    "content",
    "mood",
    "entryDate",
    "expectedVersion",
    "name",
    "email",
    "role",
    "timezone",
    "avatarUrl",
    "text",
    "schedule",
    "expiresAt",
    "pathPrefix",
    "apiKeyPrefix",
    "status",
    "statusClass",
    "teamId",
    "journalEntryId",
    "promptId",
    "userId",
    "cidrs",
    "contentType",
    "sizeBytes",
    "fileName",
    "date",
    "time",
    "weekdays",
    "sessionId",
    "apiKeyId",
    "exportId",
    "attachmentId",
    "teamInvitationId",
];

/// Ids that exist (so some requests reach the handlers' queries).
struct Fixture {
    team_id: String,
    journal_entry_id: String,
}

/// Numbers as written on the wire (raw text: `1e2`, `3.0`, `-0`).
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "2",
    "3.0",
    "3.5",
    "1e2",
    "1E2",
    "-1e2",
    "1e-7",
    "1e308",
    "-1e308",
    "100",
    "101",
    "9007199254740991",
    "9007199254740993",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "99999999999999999999999",
    "8210266876799999",
    "-210866803200001",
    "-8334601228800000",
    "253402300799999",
    "253402300800000",
    "2147483648",
    "-2147483649",
    "4.9e-324",
    "0.1",
];

const STRINGS: &[&str] = &[
    "",
    " ",
    "x",
    "\\u0000",
    "a\\u0000b",
    "\\u0001\\u0002\\u001f\\u007f",
    "\\t\\n\\r",
    "\\ud800",
    "x\\udfffy",
    "\\ud83d\\ude00",
    "\\u202e\\u200b",
    "'; DROP TABLE users; --",
    "%_\\\\",
    "0000-00-00",
    "2024-02-30",
    "2024-01-01",
    "+275760-09-13T00:00:00.000Z",
    "-271821-04-20T00:00:00.000Z",
    "1970-01-01T00:00:00.000Z",
    "not-a-uuid",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "Europe/Berlin",
    "Mars/Olympus",
    "a@b.c",
    "owner",
    "member",
    "admin",
    "personal",
    "team",
    "all",
    "http://example.com/a.png",
    "javascript:alert(1)",
    "10.0.0.0/8",
    "::/0",
    "999.1.1.1/33",
    "image/png",
    "12:30",
    "25:61",
    "/api/v1",
    "jk_live_",
];

fn json_string(raw: &str) -> String {
    format!("\"{raw}\"")
}

/// A hostile JSON value, as text.
fn value(dice: &mut Dice, fixture: &Fixture, depth: usize) -> String {
    match dice.below(if depth > 3 { 9 } else { 12 }) {
        0 => "null".to_owned(),
        1 => dice.pick(&["true", "false"]).to_string(),
        2 | 3 => dice.pick(NUMBERS).to_string(),
        4 | 5 => json_string(dice.pick::<&str>(STRINGS)),
        6 => json_string(&fixture.team_id),
        7 => json_string(&fixture.journal_entry_id),
        8 => match dice.below(4) {
            // Long strings: at, just over, and far over the usual limits.
            0 => json_string(&"x".repeat(*dice.pick(&[51, 101, 201, 2049, 100_001]))),
            1 => json_string(&"é".repeat(5_000)),
            2 => json_string(&uuid::Uuid::new_v4().to_string()),
            _ => json_string(&"\\u0000".repeat(1_000)),
        },
        9 => {
            let items: Vec<String> = (0..dice.below(4))
                .map(|_| value(dice, fixture, depth + 1))
                .collect();
            format!("[{}]", items.join(","))
        }
        10 => object(dice, fixture, &[], depth + 1),
        _ => match dice.below(3) {
            // Deep nesting (serde_json stops at 128 levels).
            0 => {
                let levels = *dice.pick(&[20, 127, 129, 500]);
                format!("{}{}", "[".repeat(levels), "]".repeat(levels))
            }
            1 => format!("[{}]", vec!["1"; 20_000].join(",")),
            _ => {
                let levels = *dice.pick(&[20, 200]);
                format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels))
            }
        },
    }
}

/// An object with some of `required`, known keys and junk keys.
fn object(dice: &mut Dice, fixture: &Fixture, required: &[String], depth: usize) -> String {
    let mut fields = Vec::new();
    for key in required {
        if dice.chance(85) {
            fields.push((key.clone(), value(dice, fixture, depth + 1)));
        }
    }
    for _ in 0..dice.below(3) {
        let key = match dice.below(6) {
            0 => dice.pick(STRINGS).to_string(),
            _ => dice.pick(KNOWN_KEYS).to_string(),
        };
        fields.push((key, value(dice, fixture, depth + 1)));
    }
    let fields: Vec<String> = fields
        .into_iter()
        .map(|(key, value)| format!("{}:{value}", json_string(&key)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// A hostile `meta` list (Date and bigint codes at existing, missing and odd paths).
fn meta(dice: &mut Dice) -> String {
    let entries: Vec<String> = (0..dice.below(3))
        .map(|_| {
            let code = dice.pick(&["0", "1", "1", "2", "7", "99", "-1", "1.5", "\"1\""]);
            let key = dice.pick(KNOWN_KEYS);
            match dice.below(4) {
                0 => format!("[{code}]"),
                1 => format!("[{code},{}]", json_string(key)),
                2 => format!("[{code},{},0]", json_string(key)),
                _ => "\"x\"".to_owned(),
            }
        })
        .collect();
    format!("[{}]", entries.join(","))
}

/// An RPC request body.
fn rpc_body(dice: &mut Dice, fixture: &Fixture, required: &[String]) -> String {
    match dice.below(20) {
        0 => String::new(),
        1 => "{".to_owned(),
        2 => "null".to_owned(),
        3 => value(dice, fixture, 0),
        4 => format!(
            "{{\"json\":{},\"meta\":{}}}",
            object(dice, fixture, required, 0),
            meta(dice)
        ),
        5 => format!(
            "{{\"json\":{},\"meta\":{}}}",
            value(dice, fixture, 0),
            value(dice, fixture, 1)
        ),
        6 => "{}".to_owned(),
        // Over the 1 MiB limit.
        7 if dice.chance(20) => format!("{{\"json\":{}}}", json_string(&"x".repeat(1_100_000))),
        _ => format!("{{\"json\":{}}}", object(dice, fixture, required, 0)),
    }
}

/// What went wrong with one request, to print with the seed.
fn check_rpc_answer(
    method: &Method,
    status: u16,
    content_type: &str,
    body: &[u8],
    allowed: bool,
) -> Result<(), String> {
    if status >= 500 {
        return Err(format!("a {status}"));
    }
    // OPTIONS: the CORS layer answers it as a preflight, empty, running nothing.
    if *method == Method::OPTIONS && status == 200 && body.is_empty() {
        return Ok(());
    }
    if !allowed && status != 405 {
        return Err(format!(
            "{method} is not allowed here, but the answer is {status}"
        ));
    }
    if *method == Method::HEAD {
        return Ok(());
    }
    if !content_type.starts_with("application/json") {
        return Err(format!("content type {content_type:?}"));
    }
    let body: Value =
        serde_json::from_slice(body).map_err(|error| format!("body is not JSON: {error}"))?;
    let Some(object) = body.as_object() else {
        return Err("body is not an object".to_owned());
    };
    if status == 200 {
        return if object.keys().all(|key| key == "json" || key == "meta") {
            Ok(())
        } else {
            Err("success body is not {json, meta}".to_owned())
        };
    }
    if object.keys().any(|key| key != "json") {
        return Err("error body has keys besides json".to_owned());
    }
    check_error_object(&body["json"], status, true)
}

/// oRPC's rule: keys ⊆ {defined, code, status, message, data}, typed, `status` the HTTP one.
fn check_error_object(error: &Value, status: u16, with_status: bool) -> Result<(), String> {
    let Some(fields) = error.as_object() else {
        return Err("error is not an object".to_owned());
    };
    let allowed: &[&str] = if with_status {
        &["defined", "code", "status", "message", "data"]
    } else {
        &["code", "message", "issues"]
    };
    if let Some(key) = fields.keys().find(|key| !allowed.contains(&key.as_str())) {
        return Err(format!("error has key {key:?}"));
    }
    if !error["code"].is_string() || !error["message"].is_string() {
        return Err("error code/message not strings".to_owned());
    }
    if with_status && (!error["defined"].is_boolean() || error["status"] != status) {
        return Err("error defined/status wrong".to_owned());
    }
    if let Some(issues) = error["data"]["issues"]
        .as_array()
        .or(error["issues"].as_array())
    {
        for issue in issues {
            if !issue["code"].is_string()
                || !issue["message"].is_string()
                || !issue["path"].is_array()
            {
                return Err(format!("malformed issue {issue}"));
            }
        }
    }
    Ok(())
}

/// Panics anywhere in this process (the api runs in it) are counted, whatever the thread.
fn count_panics() -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let panics = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&panics);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        seen.lock().unwrap().push(format!("[{thread}] {info}"));
        previous(info);
    }));
    panics
}

struct Wall {
    api: TestApi,
    /// Hostile requests go through their own client that keeps no idle connection: the
    /// server may close a connection after refusing a request whose body it did not read,
    /// and the fixture's own calls (sign-in again) must not race that close on a reused one.
    hostile: reqwest::Client,
    dice: Dice,
    fixture: Fixture,
    user: common::TestUser,
    failures: Vec<String>,
    requests: usize,
}

impl Wall {
    /// A signed-in user with a team and an entry (again after a case deleted the account
    /// or ended the session).
    async fn fixture(api: &TestApi, email: &str) -> (common::TestUser, Fixture) {
        let user = api.login(email).await;
        let team_id = api.team_with(&user, &[]).await;
        let entry = api
            .call(
                Some(&user),
                "journalEntries/create",
                json!({"title": "t", "content": "c"}),
            )
            .await
            .ok();
        let fixture = Fixture {
            team_id,
            journal_entry_id: entry["journalEntryId"].as_str().unwrap().to_owned(),
        };
        (user, fixture)
    }

    /// A hostile request through the wall's own client, for RPC and REST alike: `body` as
    /// sent, with a JSON content type nine times in ten (without one it must be refused
    /// cleanly too). `input_in_query`: an RPC query by GET, whose input travels in `?data=`
    /// (as oRPC clients send it), with no body and no dice thrown.
    fn request(
        &mut self,
        method: &Method,
        url: &str,
        body: &str,
        input_in_query: bool,
    ) -> reqwest::RequestBuilder {
        if input_in_query {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("data", body)
                .finish();
            return self.hostile.get(format!("{url}?{query}"));
        }
        let request = self
            .hostile
            .request(method.clone(), url)
            .body(body.to_owned());
        if self.dice.chance(90) {
            request.header("content-type", "application/json")
        } else {
            request
        }
    }

    fn fail(&mut self, what: String) {
        if self.failures.len() < 50 {
            self.failures.push(what);
        }
    }

    /// Send one request; its failure (if any) is recorded with the request.
    async fn send(
        &mut self,
        request: reqwest::RequestBuilder,
        method: &Method,
        label: &str,
        body: &str,
        check: impl Fn(u16, &str, &[u8]) -> Result<(), String>,
    ) -> Option<u16> {
        self.requests += 1;
        let shown: String = body.chars().take(300).collect();
        let request = request.timeout(Duration::from_secs(30));
        let again = request.try_clone();
        let mut sent = request.send().await;
        // A server that answers without reading a body closes the connection; the client's
        // pool may have picked that connection for this request. Once more, on a new one
        // (a panic is caught by the panic hook, not by this).
        if let (Err(_), Some(again)) = (&sent, again) {
            sent = again.send().await;
        }
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                self.fail(format!("{method} {label} {shown}: no answer ({error})"));
                return None;
            }
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.bytes().await.unwrap_or_default();
        if let Err(problem) = check(status, &content_type, &bytes) {
            let answer: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
            self.fail(format!(
                "{method} {label} {shown}: {problem}; answer {status} {answer}"
            ));
        }
        Some(status)
    }
}

const METHODS: &[&str] = &[
    "POST", "POST", "POST", "POST", "GET", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS",
];

/// Every RPC procedure (from the router) and every REST operation (from the OpenAPI
/// document the code generates), hostile requests with and without credentials: never a
/// 5xx, never a panic, always the documented error shape, 405 for a method a procedure
/// does not take. Seeded: `HOSTILE_INPUT_SEED=<seed>` replays a run;
/// `HOSTILE_INPUT_SECONDS` bounds it (default 60).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_no_hostile_request_gets_a_5xx_a_panic_or_a_malformed_error() {
    let seed: u64 = std::env::var("HOSTILE_INPUT_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let budget = Duration::from_secs(
        std::env::var("HOSTILE_INPUT_SECONDS")
            .ok()
            .and_then(|seconds| seconds.parse().ok())
            .unwrap_or(60),
    );
    println!("hostile input seed {seed} (replay with HOSTILE_INPUT_SEED={seed})");
    let panics = count_panics();
    let api = TestApi::start().await;

    // The open API: a key of its own owner's team, on a plan the fuzzer cannot exhaust.
    let (rest_owner, rest_fixture) = Wall::fixture(&api, "wall-rest@example.com").await;
    let key = api
        .api_key_of(&rest_owner, &rest_fixture.team_id, "wall")
        .await
        .key;
    sqlx::query(
        "INSERT INTO plans (plan_id, name, monthly_request_quota, requests_per_second)
         VALUES ('wall', 'Wall', 1000000000, 1000000) ON CONFLICT (plan_id) DO NOTHING",
    )
    .execute(&api.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE subscriptions SET plan_id = 'wall'")
        .execute(&api.pool)
        .await
        .unwrap();
    let rest_entry = api
        .client
        .post(format!("{}/api/v1/journal-entries", api.base_url))
        .header("x-api-key", &key)
        .json(&json!({"title": "t", "content": "c"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["journalEntryId"]
        .as_str()
        .unwrap()
        .to_owned();
    let document: Value = api
        .client
        .get(format!("{}/api/v1/openapi.json", api.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operations: Vec<(String, Method)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter_map(|method| method.to_uppercase().parse::<Method>().ok())
                .map(|method| (path.clone(), method))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(operations.len() >= 7, "{operations:?}");

    let (user, fixture) = Wall::fixture(&api, "wall@example.com").await;
    let procedures = api::rpc_procedures();
    // Each procedure's required fields, as the server names them for an empty object.
    let mut required: Vec<Vec<String>> = Vec::new();
    for procedure in &procedures {
        let answer = api
            .call(Some(&user), &procedure.path()["/rpc/".len()..], json!({}))
            .await;
        required.push(
            answer
                .issue_paths()
                .into_iter()
                .filter(|path| !path.is_empty() && !path.contains('.'))
                .collect(),
        );
    }
    let mut wall = Wall {
        api,
        hostile: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
        dice: Dice(seed),
        fixture,
        user,
        failures: Vec::new(),
        requests: 0,
    };
    let started = std::time::Instant::now();
    let mut round = 0_usize;
    while started.elapsed() < budget && wall.failures.is_empty() {
        round += 1;
        for (index, procedure) in procedures.iter().enumerate() {
            let mut method: Method = wall.dice.pick(METHODS).parse().unwrap();
            let body = rpc_body(&mut wall.dice, &wall.fixture, &required[index]);
            // A client sends a long input by POST (RPCLink past 2,083 characters of URL);
            // a URL of megabytes is refused by the HTTP server before the router.
            if method == Method::GET && body.len() > 4_000 {
                method = Method::POST;
            }
            let url = format!("{}{}", wall.api.base_url, procedure.path());
            let mut request = wall.request(&method, &url, &body, method == Method::GET);
            let credential = wall.dice.below(10);
            request = match credential {
                0 => request,
                1 => request.bearer_auth("not-a-session"),
                2 => request
                    .header("cookie", format!("session={}", wall.user.token))
                    .header("origin", HOSTILE_ORIGIN),
                3 => request
                    .header("cookie", format!("session={}", wall.user.token))
                    .header("origin", "http://localhost:5173"),
                _ => request.bearer_auth(&wall.user.token),
            };
            let allowed = method == Method::POST
                || (method == Method::GET && procedure.kind == api::http::rpc::Kind::Query);
            let label = format!("{} (round {round})", procedure.name);
            let status = wall
                .send(
                    request,
                    &method,
                    &label,
                    &body,
                    |status, content_type, bytes| {
                        check_rpc_answer(&method, status, content_type, bytes, allowed)
                    },
                )
                .await;
            // A case that deleted the account or ended the session: a fresh fixture.
            if credential >= 4 && status == Some(401) {
                let email = format!("wall-{}@example.com", wall.requests);
                let (user, fixture) = Wall::fixture(&wall.api, &email).await;
                wall.user = user;
                wall.fixture = fixture;
            }
        }
        for (path, documented) in &operations {
            let method: Method = if wall.dice.chance(80) {
                documented.clone()
            } else {
                wall.dice.pick(METHODS).parse().unwrap()
            };
            let id = match wall.dice.below(5) {
                0 => uuid::Uuid::new_v4().to_string(),
                1 => wall
                    .dice
                    .pick(&["%00", "not-a-uuid", "%ED%A0%80", "..", "%2F"])
                    .to_string(),
                _ => rest_entry.clone(),
            };
            let mut url = format!(
                "{}{}",
                wall.api.base_url,
                path.replace("{journalEntryId}", &id)
            );
            if wall.dice.chance(50) {
                let query: Vec<String> = (0..wall.dice.below(3) + 1)
                    .map(|_| {
                        let name = wall.dice.pick(&["limit", "cursor", "q", "x", "limit"]);
                        let value = wall.dice.pick(&[
                            "1",
                            "0",
                            "101",
                            "3.0",
                            "1e2",
                            "-1",
                            "%00",
                            "abc",
                            "",
                            "99999999999999999999",
                        ]);
                        format!("{name}={value}")
                    })
                    .collect();
                url = format!("{url}?{}", query.join("&"));
            }
            let body = object(
                &mut wall.dice,
                &wall.fixture,
                &["title".to_owned(), "content".to_owned(), "text".to_owned()],
                0,
            );
            let body = match wall.dice.below(10) {
                0 => String::new(),
                1 => value(&mut wall.dice, &wall.fixture, 0),
                _ => body,
            };
            let mut request = wall.request(&method, &url, &body, false);
            request = match wall.dice.below(10) {
                0 => request,
                1 => request.header("x-api-key", "jk_live_garbage"),
                _ => request.header("x-api-key", &key),
            };
            let label = format!("REST {path} (round {round})");
            let is_head = method == Method::HEAD;
            wall.send(
                request,
                &method,
                &label,
                &body,
                |status, content_type, bytes| {
                    if status >= 500 {
                        return Err(format!("a {status}"));
                    }
                    if status < 400 || is_head {
                        return Ok(());
                    }
                    if !content_type.starts_with("application/json") {
                        return Err(format!("content type {content_type:?}"));
                    }
                    let body: Value = serde_json::from_slice(bytes)
                        .map_err(|error| format!("body is not JSON: {error}"))?;
                    check_error_object(&body, status, false)
                },
            )
            .await;
        }
    }
    let panics = panics.lock().unwrap().clone();
    println!(
        "hostile input: {} requests in {round} rounds over {} procedures and {} REST operations, seed {seed}",
        wall.requests,
        procedures.len(),
        operations.len()
    );
    assert!(
        wall.failures.is_empty() && panics.is_empty(),
        "seed {seed} (replay with HOSTILE_INPUT_SEED={seed}):\n{}\npanics:\n{}",
        wall.failures.join("\n"),
        panics.join("\n")
    );
    wall.api.stop().await;
}
