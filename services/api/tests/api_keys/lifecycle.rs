//! A key from enabling API access to revoking it, and the validation of the inputs.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::json;

use crate::common::TestApi;
use crate::fixtures::{api_team, create_key, whoami};

/// Everything the api's tracing emits, at every level, for this test process.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        logs
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn key_lifecycle_from_enable_to_revoke_and_the_key_is_never_stored_or_logged() {
    let logs = captured_logs();
    let api = TestApi::start().await;
    let owner = api.login("owner@example.com").await;
    let team_id = api.team_with(&owner, &[]).await;

    // Before enabling: nothing to see, nothing to manage.
    let none = api
        .query(Some(&owner), "apiTeams/get", json!({ "teamId": team_id }))
        .await
        .ok();
    assert!(none.is_null());
    let keys = api
        .query(Some(&owner), "apiKeys/list", json!({ "teamId": team_id }))
        .await
        .ok();
    assert_eq!(keys, json!([]));
    let early = api
        .call(
            Some(&owner),
            "apiKeys/create",
            json!({ "teamId": team_id, "name": "too early" }),
        )
        .await;
    assert_eq!(early.status, 409);
    assert_eq!(early.code(), "API_NOT_ENABLED");

    // Enable: an API team on the free plan with a one-month period; enabling again changes
    // nothing.
    let enabled = api
        .call(
            Some(&owner),
            "apiTeams/enable",
            json!({ "teamId": team_id }),
        )
        .await
        .ok();
    assert_eq!(enabled["teamId"], team_id.as_str());
    assert_eq!(enabled["plan"]["planId"], "free");
    assert!(enabled["plan"]["monthlyRequestQuota"].as_i64().unwrap() > 0);
    assert!(enabled["plan"]["requestsPerSecond"].as_i64().unwrap() > 0);
    let subscription = &enabled["subscription"];
    assert_eq!(subscription["usageCount"], 0);
    let period =
        subscription["periodEnd"].as_i64().unwrap() - subscription["periodStart"].as_i64().unwrap();
    assert!((28..=31).contains(&(period / 86_400_000)), "{period}");
    assert_eq!(enabled["ipAllowlist"], json!([]));
    let again = api
        .call(
            Some(&owner),
            "apiTeams/enable",
            json!({ "teamId": team_id }),
        )
        .await
        .ok();
    assert_eq!(again["apiTeamId"], enabled["apiTeamId"]);
    let subscriptions: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriptions")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(subscriptions, 1);
    let plans: Vec<String> = sqlx::query_scalar("SELECT plan_id FROM plans ORDER BY plan_id")
        .fetch_all(&api.pool)
        .await
        .unwrap();
    assert_eq!(plans, ["free", "pro"]);

    // Create: the key once, its metadata, and an event.
    let (key, created) = create_key(&api, &owner, &team_id, "  CI deploys ").await;
    assert_eq!(key.len(), 60);
    assert!(key.starts_with("jk_live_"));
    let prefix = created["prefix"].as_str().unwrap().to_owned();
    assert_eq!(prefix.len(), 16);
    assert!(key.starts_with(&format!("{prefix}_")));
    assert_eq!(created["name"], "CI deploys");
    assert_eq!(created["apiTeamId"], enabled["apiTeamId"]);
    assert_eq!(created["teamId"], team_id.as_str());
    assert_eq!(created["createdByUserId"], owner.user_id.to_string());
    assert!(created["lastUsedAt"].is_null());
    assert!(created["expiresAt"].is_null());
    assert!(created["revokedAt"].is_null());
    assert_eq!(api.events_named("api_key.created").await, 1);

    // List: metadata only.
    let listed = api
        .query(Some(&owner), "apiKeys/list", json!({ "teamId": team_id }))
        .await
        .ok();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    let mut fields: Vec<&str> = listed[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "apiKeyId",
            "apiTeamId",
            "createdAt",
            "createdByUserId",
            "expiresAt",
            "lastUsedAt",
            "name",
            "prefix",
            "revokedAt",
            "revokedByUserId",
            "teamId"
        ]
    );

    // The key works; last use is recorded in the background.
    let probe = whoami(&api, &key, None).await;
    assert_eq!(probe.status, 200, "{:?}", probe.body);
    assert_eq!(probe.body["apiKeyId"], created["apiKeyId"]);
    assert_eq!(probe.body["apiTeamId"], enabled["apiTeamId"]);
    assert_eq!(probe.body["teamId"], team_id.as_str());
    assert_eq!(probe.body["keyPrefix"], prefix.as_str());
    let recorded = test_support::eventually(Duration::from_secs(5), || async {
        let last_used: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("SELECT last_used_at FROM api_keys WHERE prefix = $1")
                .bind(&prefix)
                .fetch_one(&api.pool)
                .await
                .unwrap();
        last_used.is_some()
    })
    .await;
    assert!(recorded, "last_used_at is written after use");

    // At rest: a scrypt PHC string, and the key appears in no row of any table.
    let key_hash: String = sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE prefix = $1")
        .bind(&prefix)
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert!(key_hash.starts_with("$scrypt$ln=14,r=8,p=1$"), "{key_hash}");
    let secret = &key[17..];
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'api' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&api.pool)
    .await
    .unwrap();
    for table in &tables {
        let hits: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} t WHERE t::text LIKE '%' || $1 || '%'"
        ))
        .bind(secret)
        .fetch_one(&api.pool)
        .await
        .unwrap();
        assert_eq!(hits, 0, "the key's secret is stored in {table}");
    }
    // Every message emitted so far, published (and deleted from the outbox) or not.
    let mut emitted = api.emitted("EVENTS", "").await;
    emitted.extend(api.emitted("CHANGES", "").await);
    assert!(!emitted.is_empty());
    let in_outbox = emitted
        .iter()
        .filter(|message| {
            message
                .payload
                .windows(secret.len())
                .any(|window| window == secret.as_bytes())
        })
        .count();
    assert_eq!(in_outbox, 0);

    // Revoke: refused from then on; revoking again returns it unchanged, with no event.
    let key_id = created["apiKeyId"].clone();
    let revoked = api
        .call(
            Some(&owner),
            "apiKeys/revoke",
            json!({ "apiKeyId": key_id }),
        )
        .await
        .ok();
    assert!(revoked["revokedAt"].is_i64());
    assert_eq!(revoked["revokedByUserId"], owner.user_id.to_string());
    let refused = whoami(&api, &key, None).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code(), "INVALID_API_KEY");
    assert_eq!(
        refused.body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["code", "message"]
    );
    let twice = api
        .call(
            Some(&owner),
            "apiKeys/revoke",
            json!({ "apiKeyId": key_id }),
        )
        .await
        .ok();
    assert_eq!(twice["revokedAt"], revoked["revokedAt"]);
    assert_eq!(api.events_named("api_key.revoked").await, 1);

    // An expiring key works until it expires, also from the cache.
    let expiring = api
        .call(
            Some(&owner),
            "apiKeys/create",
            json!({
                "teamId": team_id,
                "name": "short",
                // Room for the first verification (scrypt) on a busy machine.
                "expiresAt": chrono::Utc::now().timestamp_millis() + 8_000,
            }),
        )
        .await
        .ok();
    let short_key = expiring["key"].as_str().unwrap();
    assert!(expiring["expiresAt"].is_i64());
    assert_eq!(whoami(&api, short_key, None).await.status, 200);
    let expires_at = expiring["expiresAt"].as_i64().unwrap();
    assert!(
        chrono::Utc::now().timestamp_millis() < expires_at,
        "the machine took longer than the key's lifetime to verify it once"
    );
    // Wait for the expiry instant itself, then the cached key must be refused at once.
    let until_expiry = expires_at - chrono::Utc::now().timestamp_millis() + 100;
    tokio::time::sleep(Duration::from_millis(until_expiry.max(0) as u64)).await;
    assert_eq!(whoami(&api, short_key, None).await.status, 401);

    // Missing or malformed header.
    let missing = api
        .client
        .get(format!("{}/api/v1/whoami", api.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(
        whoami(&api, "not a key", None).await.code(),
        "INVALID_API_KEY"
    );

    // Logs name the prefix, never the key.
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logged.contains(&prefix), "the prefix is logged");
    assert!(!logged.contains(secret), "the key's secret was logged");
    assert!(!logged.contains(short_key));
    api.stop().await;
}

#[tokio::test]
async fn invalid_inputs_name_their_fields() {
    let api = TestApi::start().await;
    let (owner, team_id) = api_team(&api, "inputs@example.com").await;

    let bad_cidrs = api
        .call(
            Some(&owner),
            "apiTeams/setIpAllowlist",
            json!({ "teamId": team_id, "cidrs": ["10.0.0.0/8", "nope", "10.1.2.3/8", "::1/129"] }),
        )
        .await;
    assert_eq!(bad_cidrs.status, 400);
    assert_eq!(bad_cidrs.code(), "BAD_REQUEST");
    assert_eq!(bad_cidrs.issue_paths(), ["cidrs.1", "cidrs.2", "cidrs.3"]);
    let issue = &bad_cidrs.json["data"]["issues"][1];
    assert_eq!(issue["code"], "invalid_format");
    assert_eq!(issue["path"], json!(["cidrs", 2]));
    assert!(issue["message"].as_str().unwrap().contains("10.0.0.0/8"));
    let too_many: Vec<String> = (0..101).map(|i| format!("10.0.{i}.0/24")).collect();
    let long = api
        .call(
            Some(&owner),
            "apiTeams/setIpAllowlist",
            json!({ "teamId": team_id, "cidrs": too_many }),
        )
        .await;
    assert_eq!(long.issue_paths(), ["cidrs"]);
    let not_strings = api
        .call(
            Some(&owner),
            "apiTeams/setIpAllowlist",
            json!({ "teamId": team_id, "cidrs": ["10.0.0.0/8", 7] }),
        )
        .await;
    assert_eq!(not_strings.issue_paths(), ["cidrs.1"]);

    let bad_key = api
        .call(
            Some(&owner),
            "apiKeys/create",
            json!({ "teamId": team_id, "name": "  ", "expiresAt": 1_000 }),
        )
        .await;
    assert_eq!(bad_key.issue_paths(), ["name", "expiresAt"]);
    let unknown_field = api
        .call(
            Some(&owner),
            "apiKeys/create",
            json!({ "teamId": team_id, "name": "x", "scopes": [] }),
        )
        .await;
    assert_eq!(
        unknown_field.json["data"]["issues"][0]["code"],
        "unrecognized_keys"
    );
    let bad_id = api
        .call(
            Some(&owner),
            "apiKeys/revoke",
            json!({ "apiKeyId": "nope" }),
        )
        .await;
    assert_eq!(bad_id.issue_paths(), ["apiKeyId"]);
    // A Date (ISO string with RPC meta) is accepted for expiresAt.
    let in_an_hour = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let response = api
        .client
        .post(format!("{}/rpc/apiKeys/create", api.base_url))
        .bearer_auth(&owner.token)
        .json(&json!({
            "json": { "teamId": team_id, "name": "dated", "expiresAt": in_an_hour },
            "meta": [[1, "expiresAt"]],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    api.stop().await;
}
