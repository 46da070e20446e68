//! What tests that start the services in-process share: signing in, and removing a test's
//! streams afterwards.

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
