//! The api in-process on port 0 against a fresh database and a bus namespace of its own, and
//! helpers to call it the way clients do (dev login, then RPC with a bearer token).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::sync::Arc;
use std::time::Duration;

use messages::sync::v1::{Changeset, RowChange};
use serde_json::{Value, json};
use test_support::{Emitted, Outbox, TestDb, nats_url};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct TestApi {
    pub base_url: String,
    pub db: Arc<TestDb>,
    pub pool: sqlx::PgPool,
    pub client: reqwest::Client,
    pub namespace: String,
    /// The running service's state (e.g. `state.api_keys.scrypt_runs()`).
    pub state: api::AppState,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), api::Error>>,
    /// A replica shares its first instance's database and namespace and leaves both alone.
    replica: bool,
}

/// A signed-in user.
pub type TestUser = test_support::DevUser;

/// An open API key and its API team.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub key: String,
    pub api_team_id: Uuid,
}

/// An RPC answer: the status and the `json` of the envelope (the error object on failure).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub json: Value,
}

impl Answer {
    /// The output of a successful call (panics with the error otherwise).
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "expected success, got {}", self.json);
        self.json
    }

    /// The error code of a failed call, checking the oRPC error shape on the way.
    pub fn code(&self) -> &str {
        assert_ne!(self.status, 200, "expected an error, got {}", self.json);
        assert_eq!(self.json["status"], self.status, "status inside the body");
        assert!(self.json["defined"].is_boolean());
        assert!(self.json["message"].is_string());
        self.json["code"].as_str().unwrap()
    }

    /// The paths of the validation issues, e.g. `["title", "tags.1"]`.
    pub fn issue_paths(&self) -> Vec<String> {
        issue_paths(&self.json["data"]["issues"])
    }
}

/// The dotted paths (`tags.1`) of a list of validation issues: the RPC error's `data.issues`
/// and the open API's `issues` name them alike.
pub fn issue_paths(issues: &Value) -> Vec<String> {
    issues
        .as_array()
        .map(|issues| {
            issues
                .iter()
                .map(|issue| {
                    issue["path"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|segment| match segment {
                            Value::String(key) => key.clone(),
                            other => other.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(".")
                })
                .collect()
        })
        .unwrap_or_default()
}

impl TestApi {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut api::Config)) -> Self {
        Self::start_at(|config, _| configure(config)).await
    }

    /// Like [`start_with`](Self::start_with); the closure also gets the api's base URL
    /// (for settings that point back at the api, such as the OAuth redirect URL).
    pub async fn start_at(configure: impl FnOnce(&mut api::Config, &str)) -> Self {
        let db = Arc::new(TestDb::new().await);
        let namespace = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        Self::launch(db, namespace, false, configure).await
    }

    /// The api on a database of the caller's (e.g. on a private Postgres a test stops).
    pub async fn start_on(db: TestDb) -> Self {
        let namespace = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        Self::launch(Arc::new(db), namespace, false, |_, _| {}).await
    }

    /// A second api instance on this one's database and bus namespace (another replica).
    pub async fn replica(&self, configure: impl FnOnce(&mut api::Config)) -> Self {
        Self::launch(
            Arc::clone(&self.db),
            self.namespace.clone(),
            true,
            |config, _| configure(config),
        )
        .await
    }

    async fn launch(
        db: Arc<TestDb>,
        namespace: String,
        replica: bool,
        configure: impl FnOnce(&mut api::Config, &str),
    ) -> Self {
        let mut config = api::Config::for_tests(db.url(), &nats_url());
        config.common.bus_namespace = namespace.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        configure(&mut config, &base_url);
        let shutdown = CancellationToken::new();
        let service = api::Service::start(config, listener, shutdown.clone())
            .await
            .unwrap();
        let state = service.state().clone();
        let handle = tokio::spawn(service.serve());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        test_support::wait_ready(&base_url, "api").await;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(conn, "SET search_path = api").await?;
                    Ok(())
                })
            })
            .connect(db.url())
            .await
            .unwrap();
        Self {
            base_url,
            db,
            pool,
            client,
            namespace,
            state,
            shutdown,
            handle,
            replica,
        }
    }

    /// Stop the service as SIGTERM does and wait until it has returned, keeping its database
    /// and bus namespace to look at; [`stop`](Self::stop) still cleans up afterwards.
    pub async fn stop_service(&mut self) {
        self.shutdown.cancel();
        let handle = std::mem::replace(&mut self.handle, tokio::spawn(async { Ok(()) }));
        test_support::assert_stops_ok("the api", Duration::from_secs(30), handle).await;
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        test_support::assert_stops_ok("the api", Duration::from_secs(15), self.handle).await;
        self.pool.close().await;
        if self.replica {
            return;
        }
        test_support::delete_streams(&self.namespace).await;
    }

    /// Sign in through the dev login.
    pub async fn login(&self, email: &str) -> TestUser {
        test_support::dev_login(&self.client, &self.base_url, email).await
    }

    /// `POST /rpc/<procedure>` with `{"json": input}`.
    pub async fn call(&self, user: Option<&TestUser>, procedure: &str, input: Value) -> Answer {
        let mut request = self
            .client
            .post(format!("{}/rpc/{procedure}", self.base_url))
            .json(&json!({ "json": input }));
        if let Some(user) = user {
            request = request.bearer_auth(&user.token);
        }
        Self::answer(request.send().await.unwrap()).await
    }

    /// `GET /rpc/<procedure>?data=<{"json": input}>` (GET-able queries).
    pub async fn query(&self, user: Option<&TestUser>, procedure: &str, input: Value) -> Answer {
        let data = json!({ "json": input }).to_string();
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("data", &data)
            .finish();
        let mut request = self
            .client
            .get(format!("{}/rpc/{procedure}?{query}", self.base_url));
        if let Some(user) = user {
            request = request.bearer_auth(&user.token);
        }
        Self::answer(request.send().await.unwrap()).await
    }

    async fn answer(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            json: body.get("json").cloned().unwrap_or(body),
        }
    }

    /// A team owned by `owner` with `members` (user, role) who joined through invitations.
    pub async fn team_with(&self, owner: &TestUser, members: &[(&TestUser, &str)]) -> String {
        let team = self
            .call(Some(owner), "teams/create", json!({"name": "Writers"}))
            .await
            .ok();
        let team_id = team["teamId"].as_str().unwrap().to_owned();
        for (member, role) in members {
            self.call(
                Some(owner),
                "teams/invite",
                json!({"teamId": team_id, "email": member.email, "role": role}),
            )
            .await
            .ok();
            let invitation = self.invitation_to(member, &team_id).await;
            self.call(
                Some(member),
                "teams/acceptInvitation",
                json!({"teamInvitationId": invitation}),
            )
            .await
            .ok();
        }
        team_id
    }

    /// The id of `member`'s pending invitation to `team_id` (panics when there is none).
    pub async fn invitation_to(&self, member: &TestUser, team_id: &str) -> Value {
        let invitations = self
            .query(Some(member), "teams/listInvitations", Value::Null)
            .await
            .ok();
        invitations
            .as_array()
            .unwrap()
            .iter()
            .find(|invitation| invitation["teamId"] == team_id)
            .expect("the invitation")["teamInvitationId"]
            .clone()
    }

    /// `owner@`, `admin@`, `member@` and `outsider@example.com` signed in, the first three in
    /// one team in those roles: the cast of the tests of who may do what. Returns
    /// `(owner, admin, member, outsider, team_id)`.
    pub async fn team_of_every_role(&self) -> (TestUser, TestUser, TestUser, TestUser, String) {
        let owner = self.login("owner@example.com").await;
        let admin = self.login("admin@example.com").await;
        let member = self.login("member@example.com").await;
        let outsider = self.login("outsider@example.com").await;
        let team_id = self
            .team_with(&owner, &[(&admin, "admin"), (&member, "member")])
            .await;
        (owner, admin, member, outsider, team_id)
    }

    /// Open API access for `team_id` (its owner or an admin calls) and a new key named
    /// `key_name`, shown once.
    pub async fn api_key_of(&self, owner: &TestUser, team_id: &str, key_name: &str) -> ApiKey {
        self.call(Some(owner), "apiTeams/enable", json!({ "teamId": team_id }))
            .await
            .ok();
        let created = self
            .call(
                Some(owner),
                "apiKeys/create",
                json!({ "teamId": team_id, "name": key_name }),
            )
            .await
            .ok();
        ApiKey {
            key: created["key"].as_str().unwrap().to_owned(),
            api_team_id: created["apiTeamId"].as_str().unwrap().parse().unwrap(),
        }
    }

    /// Put `api_team_id` on `plan_id` straight in the database (no event, no sensitive-call
    /// check), for tests whose own calls the free plan's rate would throttle.
    pub async fn set_plan(&self, api_team_id: Uuid, plan_id: &str) {
        sqlx::query("UPDATE subscriptions SET plan_id = $2 WHERE api_team_id = $1")
            .bind(api_team_id)
            .bind(plan_id)
            .execute(&self.pool)
            .await
            .unwrap();
    }

    /// What this api emitted through its outbox.
    pub fn outbox(&self) -> Outbox<'_> {
        Outbox::new(&self.pool, &self.namespace)
    }

    /// [`Outbox::messages`] of this api's outbox.
    pub async fn emitted(&self, stream_base: &str, subject_prefix: &str) -> Vec<Emitted> {
        self.outbox().messages(stream_base, subject_prefix).await
    }

    /// [`Outbox::changesets`] of this api's outbox.
    pub async fn changesets(&self) -> Vec<Changeset> {
        self.outbox().changesets().await
    }

    /// [`Outbox::row_changes`] of this api's outbox.
    pub async fn row_changes(&self, table: &str) -> Vec<(String, RowChange)> {
        self.outbox().row_changes(table).await
    }

    /// Drop this instance's cached sessions: a test that changes a session row in SQL (not
    /// through the api, which would drop them itself) makes the next request read it.
    pub fn forget_cached_sessions(&self) {
        self.state.sessions.forget_all();
    }

    /// `UPDATE sessions SET <assignments>` for `user`'s sessions, then drop the cached ones so
    /// the next request sees the change.
    pub async fn update_sessions(&self, user: &TestUser, assignments: &str) {
        sqlx::query(&format!(
            "UPDATE sessions SET {assignments} WHERE user_id = $1"
        ))
        .bind(user.user_id)
        .execute(&self.pool)
        .await
        .unwrap();
        self.forget_cached_sessions();
    }

    /// Make `user`'s sessions two days old: past the fresh age that sensitive calls need.
    pub async fn age_sessions(&self, user: &TestUser) {
        self.update_sessions(user, "created_at = now() - interval '2 days'")
            .await;
    }

    /// How many events of bus name `name` (e.g. `journal_entry.created`) were emitted.
    pub async fn events_named(&self, name: &str) -> i64 {
        self.emitted("EVENTS", &format!("events.{name}"))
            .await
            .iter()
            .filter(|message| message.name == name)
            .count() as i64
    }
}
