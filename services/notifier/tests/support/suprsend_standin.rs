//! A local stand-in for SuprSend's HTTP API, speaking the real protocol:
//!
//! - `POST /trigger/` with `Authorization: Bearer <key>` and a JSON body
//!   `{workflow, recipients: [{distinct_id, $email?, name?, ...}], data?, $idempotency_key?}`
//!   → `202 {"status":"success"}`; a wrong key → 401; a malformed body → 400 with a JSON error
//!   saying what is wrong. A repeated `$idempotency_key` is accepted but not run again, as
//!   SuprSend does.
//! - `POST /v1/user/{distinct_id}/` with `$email` (array), `name`, `$timezone` → `201` with
//!   the profile.
//!
//! Tests queue failures (`fail_next`): a status with an optional `Retry-After`, or a delay
//! longer than the client's timeout (the request is still processed: SuprSend got it, the
//! client never heard back).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// A scripted answer for the next request.
#[derive(Debug, Clone)]
pub enum Failure {
    Status {
        status: u16,
        retry_after: Option<String>,
        body: String,
    },
    /// Process the request, but answer only after this delay (the client has timed out by
    /// then).
    SlowAccept(Duration),
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub at: Instant,
    pub authorization: Option<String>,
    pub body: Value,
    /// The status it answered.
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    failures: VecDeque<Failure>,
    received: Vec<Received>,
    /// Workflow runs actually started (idempotency keys seen once).
    runs: Vec<Value>,
    keys: HashSet<String>,
    profiles: Vec<(String, Value)>,
}

#[derive(Clone)]
pub struct StandIn {
    pub base_url: String,
    api_key: String,
    inner: Arc<Mutex<Inner>>,
}

impl StandIn {
    pub async fn start(api_key: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let stand_in = Self {
            base_url,
            api_key: api_key.to_owned(),
            inner: Arc::default(),
        };
        let app = Router::new()
            .route("/trigger/", post(trigger))
            .route("/v1/user/{distinct_id}/", post(upsert_user))
            .with_state(stand_in.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        stand_in
    }

    pub fn fail_next(&self, failure: Failure) {
        self.inner.lock().unwrap().failures.push_back(failure);
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Workflow runs SuprSend would have started (one per idempotency key).
    pub fn runs(&self) -> Vec<Value> {
        self.inner.lock().unwrap().runs.clone()
    }

    pub fn profiles(&self) -> Vec<(String, Value)> {
        self.inner.lock().unwrap().profiles.clone()
    }

    fn authorized(&self, headers: &HeaderMap) -> (bool, Option<String>) {
        let value = headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let ok = value.as_deref() == Some(format!("Bearer {}", self.api_key).as_str());
        (ok, value)
    }

    fn record(&self, path: String, authorization: Option<String>, body: Value, status: u16) {
        self.inner.lock().unwrap().received.push(Received {
            path,
            at: Instant::now(),
            authorization,
            body,
            status,
        });
    }

    fn next_failure(&self) -> Option<Failure> {
        self.inner.lock().unwrap().failures.pop_front()
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (
        status,
        axum::Json(json!({"code": status.as_u16(), "message": message})),
    )
        .into_response()
}

/// What is wrong with a trigger body, if anything (SuprSend's documented shape).
fn check_trigger(body: &Value) -> Result<(), String> {
    let object = body.as_object().ok_or("body must be a JSON object")?;
    match object.get("workflow") {
        Some(Value::String(slug)) if !slug.is_empty() => {}
        _ => return Err("workflow: a non-empty string is required".into()),
    }
    let recipients = object
        .get("recipients")
        .and_then(Value::as_array)
        .ok_or("recipients: an array is required")?;
    if recipients.is_empty() || recipients.len() > 100 {
        return Err("recipients: 1 to 100 recipients".into());
    }
    for (index, recipient) in recipients.iter().enumerate() {
        let recipient = recipient
            .as_object()
            .ok_or(format!("recipients[{index}]: an object is required"))?;
        match recipient.get("distinct_id") {
            Some(Value::String(id)) if !id.is_empty() => {}
            _ => return Err(format!("recipients[{index}].distinct_id is required")),
        }
        if let Some(emails) = recipient.get("$email") {
            let valid = emails.as_array().is_some_and(|list| {
                list.iter()
                    .all(|email| email.as_str().is_some_and(|e| e.contains('@')))
            });
            if !valid {
                return Err(format!("recipients[{index}].$email: an array of addresses"));
            }
        }
        if let Some(name) = recipient.get("name")
            && !name.is_string()
        {
            return Err(format!("recipients[{index}].name: a string"));
        }
    }
    if let Some(data) = object.get("data")
        && !data.is_object()
    {
        return Err("data: an object".into());
    }
    if let Some(key) = object.get("$idempotency_key")
        && !key
            .as_str()
            .is_some_and(|key| !key.is_empty() && key.len() <= 255)
    {
        return Err("$idempotency_key: a string of 1 to 255 characters".into());
    }
    Ok(())
}

/// A scripted failure's response, if one is queued. A slow accept is processed as usual and
/// only its answer is held back (SuprSend got the request; the client never hears so): the
/// caller gets the delay to sleep *after* processing, since a client that gives up cancels
/// the handler.
async fn scripted(
    stand_in: &StandIn,
    path: &str,
    authorization: Option<String>,
    body: &Value,
    slow: &mut Option<Duration>,
) -> Option<Response> {
    match stand_in.next_failure()? {
        Failure::Status {
            status,
            retry_after,
            body: response_body,
        } => {
            stand_in.record(path.to_owned(), authorization, body.clone(), status);
            let mut response =
                (StatusCode::from_u16(status).unwrap(), response_body).into_response();
            if let Some(retry_after) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", retry_after.parse().unwrap());
            }
            Some(response)
        }
        Failure::SlowAccept(delay) => {
            *slow = Some(delay);
            None
        }
    }
}

async fn trigger(State(stand_in): State<StandIn>, headers: HeaderMap, body: String) -> Response {
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let (authorized, authorization) = stand_in.authorized(&headers);
    if !authorized {
        stand_in.record("/trigger/".into(), authorization, parsed, 401);
        return error(StatusCode::UNAUTHORIZED, "invalid API key".into());
    }
    let mut slow = None;
    if let Some(response) = scripted(
        &stand_in,
        "/trigger/",
        authorization.clone(),
        &parsed,
        &mut slow,
    )
    .await
    {
        return response;
    }
    let json_content = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if let Err(problem) = check_trigger(&parsed).and_then(|()| {
        json_content
            .then_some(())
            .ok_or_else(|| "Content-Type must be application/json".to_owned())
    }) {
        stand_in.record("/trigger/".into(), authorization, parsed, 400);
        return error(StatusCode::BAD_REQUEST, problem);
    }
    {
        let mut inner = stand_in.inner.lock().unwrap();
        let key = parsed
            .get("$idempotency_key")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let first = match key {
            Some(key) => inner.keys.insert(key),
            None => true,
        };
        if first {
            inner.runs.push(parsed.clone());
        }
    }
    stand_in.record("/trigger/".into(), authorization, parsed, 202);
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"status": "success"})),
    )
        .into_response()
}

async fn upsert_user(
    State(stand_in): State<StandIn>,
    Path(distinct_id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let path = format!("/v1/user/{distinct_id}/");
    let (authorized, authorization) = stand_in.authorized(&headers);
    if !authorized {
        stand_in.record(path, authorization, parsed, 401);
        return error(StatusCode::UNAUTHORIZED, "invalid API key".into());
    }
    let mut slow = None;
    if let Some(response) =
        scripted(&stand_in, &path, authorization.clone(), &parsed, &mut slow).await
    {
        return response;
    }
    let valid_emails = parsed
        .get("$email")
        .and_then(Value::as_array)
        .is_some_and(|list| {
            list.iter()
                .all(|email| email.as_str().is_some_and(|e| e.contains('@')))
        });
    if !valid_emails {
        stand_in.record(path, authorization, parsed, 400);
        return error(
            StatusCode::BAD_REQUEST,
            "$email: an array of addresses".into(),
        );
    }
    stand_in
        .inner
        .lock()
        .unwrap()
        .profiles
        .push((distinct_id.clone(), parsed.clone()));
    stand_in.record(path, authorization, parsed.clone(), 201);
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    (
        StatusCode::CREATED,
        axum::Json(json!({"distinct_id": distinct_id, "properties": parsed})),
    )
        .into_response()
}
