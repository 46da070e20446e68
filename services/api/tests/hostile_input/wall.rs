//! The wall: every procedure and every REST route, generated hostile requests.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::HOSTILE_ORIGIN;
use crate::common;
use crate::common::TestApi;
use crate::wall_checks::{check_error_object, check_rpc_answer, count_panics};
use crate::wall_values::{Dice, Fixture, object, rpc_body, value};

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
    let rest_entry = test_support::send_json(
        api.client
            .post(format!("{}/api/v1/journal-entries", api.base_url))
            .header("x-api-key", &key)
            .json(&json!({"title": "t", "content": "c"})),
    )
    .await["journalEntryId"]
        .as_str()
        .unwrap()
        .to_owned();
    let document = test_support::send_json(
        api.client
            .get(format!("{}/api/v1/openapi.json", api.base_url)),
    )
    .await;
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
