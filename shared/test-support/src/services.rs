//! What tests that start the services in-process share: signing in, calling the api,
//! reading a service's metrics, and removing a test's streams afterwards.

use uuid::Uuid;

/// A user signed in through the api's dev login.
#[derive(Debug, Clone)]
pub struct DevUser {
    pub user_id: Uuid,
    pub token: String,
    pub email: String,
}

/// Sign in as `email` through `POST <api_url>/auth/dev/login` (the user is created on first
/// sign-in; the name is the address's local part).
pub async fn dev_login(client: &reqwest::Client, api_url: &str, email: &str) -> DevUser {
    let name = email.split('@').next().unwrap_or(email);
    let response = client
        .post(format!("{api_url}/auth/dev/login"))
        .json(&serde_json::json!({ "email": email, "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "dev login");
    let body: serde_json::Value = response.json().await.unwrap();
    DevUser {
        user_id: body["userId"].as_str().unwrap().parse().unwrap(),
        token: body["token"].as_str().unwrap().to_owned(),
        email: email.to_owned(),
    }
}

/// `POST <api_url>/rpc/<procedure>` with `{"json": input}` and `token` as the bearer, as the
/// web client calls; the status and the envelope's `json` (the whole body when it has none).
pub async fn rpc_call(
    client: &reqwest::Client,
    api_url: &str,
    token: &str,
    procedure: &str,
    input: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = client
        .post(format!("{api_url}/rpc/{procedure}"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "json": input }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body.get("json").cloned().unwrap_or(body))
}

/// [`rpc_call`] that must succeed: its output (panics with the error otherwise).
pub async fn rpc_ok(
    client: &reqwest::Client,
    api_url: &str,
    token: &str,
    procedure: &str,
    input: serde_json::Value,
) -> serde_json::Value {
    let (status, body) = rpc_call(client, api_url, token, procedure, input).await;
    assert_eq!(status, 200, "{procedure}: {body}");
    body
}

/// The Prometheus text a service at `base_url` serves on `/metrics`, for tests that read one
/// of its series (panics when the service does not answer).
pub async fn metrics_text(base_url: &str) -> String {
    reqwest::get(format!("{base_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Delete a test's bus streams (`<NAMESPACE>_EVENTS`, `_TASKS`, `_CHANGES`) on the shared NATS
/// server; ones already gone are fine.
pub async fn delete_streams(namespace: &str) {
    let client = async_nats::connect(crate::nats_url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    for base in ["EVENTS", "TASKS", "CHANGES"] {
        let _ = jetstream
            .delete_stream(format!("{}_{base}", namespace.to_ascii_uppercase()))
            .await;
    }
}
