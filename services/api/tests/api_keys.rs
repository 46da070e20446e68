//! API teams and API keys against real Postgres and NATS: the procedures, roles and tiers,
//! key verification through `GET /api/v1/whoami` (cache, single flight, revocation across
//! replicas, IP allow-lists behind and without trusted proxies, failure rate limits), and the
//! key never stored or logged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{TestApi, TestUser};
use serde_json::{Value, json};

/// `{status, body, retry-after}` of a `GET /api/v1/whoami`.
#[derive(Debug)]
struct Probe {
    status: u16,
    body: Value,
    retry_after: Option<u64>,
}

impl Probe {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

async fn whoami(api: &TestApi, key: &str, forwarded_for: Option<&str>) -> Probe {
    let mut request = api
        .client
        .get(format!("{}/api/v1/whoami", api.base_url))
        .header("x-api-key", key);
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded_for);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().parse().unwrap());
    let body = response.json().await.unwrap_or(Value::Null);
    Probe {
        status,
        body,
        retry_after,
    }
}

/// A team owned by a fresh user, with API access enabled.
async fn api_team(api: &TestApi, email: &str) -> (TestUser, String) {
    let owner = api.login(email).await;
    let team_id = api.team_with(&owner, &[]).await;
    api.call(
        Some(&owner),
        "apiTeams/enable",
        json!({ "teamId": team_id }),
    )
    .await
    .ok();
    // `/api/v1/whoami` is metered like every open API route: the pro plan's 50 requests per
    // second keep the free plan's 2 from throttling these verification bursts.
    sqlx::query(
        "UPDATE subscriptions SET plan_id = 'pro'
          WHERE api_team_id = (SELECT api_team_id FROM api_teams WHERE team_id = $1::uuid)",
    )
    .bind(&team_id)
    .execute(&api.pool)
    .await
    .unwrap();
    (owner, team_id)
}

/// `apiKeys.create` → (the full key, the output).
async fn create_key(api: &TestApi, user: &TestUser, team_id: &str, name: &str) -> (String, Value) {
    let created = api
        .call(
            Some(user),
            "apiKeys/create",
            json!({ "teamId": team_id, "name": name }),
        )
        .await
        .ok();
    (created["key"].as_str().unwrap().to_owned(), created)
}

async fn set_allowlist(api: &TestApi, user: &TestUser, team_id: &str, cidrs: &[&str]) -> Value {
    api.call(
        Some(user),
        "apiTeams/setIpAllowlist",
        json!({ "teamId": team_id, "cidrs": cidrs }),
    )
    .await
    .ok()
}

/// A well-formed key that no team holds.
fn random_key() -> String {
    let alphabet: Vec<char> = ('0'..='9').chain('A'..='Z').chain('a'..='z').collect();
    let pick = |n: usize| -> String {
        (0..n)
            .map(|_| alphabet[rand::random_range(0..alphabet.len())])
            .collect()
    };
    format!("jk_live_{}_{}", pick(8), pick(43))
}

/// The same prefix with another secret.
fn wrong_secret(key: &str) -> String {
    let (prefix, _) = key.split_at(17);
    let other = random_key();
    format!("{prefix}{}", &other[17..])
}

async fn age_sessions(api: &TestApi, user: &TestUser) {
    sqlx::query("UPDATE sessions SET created_at = now() - interval '2 days' WHERE user_id = $1")
        .bind(user.user_id)
        .execute(&api.pool)
        .await
        .unwrap();
    api.forget_cached_sessions();
}

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
async fn a_cached_key_costs_no_scrypt_and_a_burst_with_a_fresh_key_runs_exactly_one() {
    let api = TestApi::start().await;
    let (owner, team_id) = api_team(&api, "cache@example.com").await;
    let verifier = &api.state.api_keys;

    let (key, _) = create_key(&api, &owner, &team_id, "cached").await;
    let before = verifier.scrypt_runs();
    assert_eq!(whoami(&api, &key, None).await.status, 200);
    assert_eq!(verifier.scrypt_runs(), before + 1, "the first use verifies");
    for _ in 0..10 {
        assert_eq!(whoami(&api, &key, None).await.status, 200);
    }
    assert_eq!(
        verifier.scrypt_runs(),
        before + 1,
        "cache hits run no scrypt"
    );

    // A wrong secret for a real prefix is a full verification, and is not cached as good.
    let wrong = wrong_secret(&key);
    assert_eq!(whoami(&api, &wrong, None).await.status, 401);
    assert_eq!(verifier.scrypt_runs(), before + 2);
    // An unknown prefix is refused without scrypt.
    assert_eq!(whoami(&api, &random_key(), None).await.status, 401);
    assert_eq!(verifier.scrypt_runs(), before + 2);

    // 32 concurrent first uses of a fresh key: one scrypt, 32 answers.
    let (fresh, _) = create_key(&api, &owner, &team_id, "burst").await;
    let before = verifier.scrypt_runs();
    let probes = futures::future::join_all((0..32).map(|_| whoami(&api, &fresh, None))).await;
    assert!(
        probes.iter().all(|probe| probe.status == 200),
        "{:?}",
        probes.iter().map(|probe| probe.status).collect::<Vec<_>>()
    );
    assert_eq!(verifier.scrypt_runs(), before + 1, "single flight");

    // The counters are exported for Prometheus too.
    let (status, metrics) = test_support::get(&format!("{}/metrics", api.base_url)).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("api_key_scrypt_runs_total"), "{metrics}");
    assert!(metrics.contains("api_key_verifications_total"));
    api.stop().await;
}

/// Generous for a busy machine (the latency target lives in the benchmarks), and far below
/// the tests' 60 s cache TTL, so only the invalidation can make these pass.
const CROSS_REPLICA_BOUND: Duration = Duration::from_secs(15);

#[tokio::test]
async fn revocation_and_allowlist_changes_reach_another_replica_before_its_cache_expires() {
    let a = TestApi::start().await;
    let b = a.replica(|_| {}).await;
    let (owner, team_id) = api_team(&a, "replicas@example.com").await;
    let (key, created) = create_key(&a, &owner, &team_id, "shared").await;

    // B verifies and caches the key.
    assert_eq!(whoami(&b, &key, None).await.status, 200);
    let runs = b.state.api_keys.scrypt_runs();
    assert_eq!(whoami(&b, &key, None).await.status, 200);
    assert_eq!(
        b.state.api_keys.scrypt_runs(),
        runs,
        "B serves it from its cache"
    );

    // An allow-list change on A: B's cached allow-list is dropped.
    set_allowlist(&a, &owner, &team_id, &["192.0.2.0/24"]).await;
    let started = Instant::now();
    let refused = test_support::eventually(CROSS_REPLICA_BOUND, || async {
        whoami(&b, &key, None).await.status == 403
    })
    .await;
    assert!(
        refused,
        "B still allowed 127.0.0.1 after {:?}",
        started.elapsed()
    );
    set_allowlist(&a, &owner, &team_id, &[]).await;
    let allowed = test_support::eventually(CROSS_REPLICA_BOUND, || async {
        whoami(&b, &key, None).await.status == 200
    })
    .await;
    assert!(allowed);

    // Revocation on A: B refuses its cached key long before its cache entry would expire.
    a.call(
        Some(&owner),
        "apiKeys/revoke",
        json!({ "apiKeyId": created["apiKeyId"] }),
    )
    .await
    .ok();
    let started = Instant::now();
    let refused = test_support::eventually(CROSS_REPLICA_BOUND, || async {
        whoami(&b, &key, None).await.status == 401
    })
    .await;
    assert!(refused, "B still accepted after {:?}", started.elapsed());
    assert_eq!(whoami(&a, &key, None).await.status, 401);
    b.stop().await;
    a.stop().await;
}

/// Issue 15: a deleted team's keys stayed valid in every other replica's cache until the TTL.
#[tokio::test]
async fn deleting_a_team_drops_its_keys_from_every_replica_within_a_second() {
    let a = TestApi::start().await;
    let b = a.replica(|_| {}).await;
    let (owner, team_id) = api_team(&a, "deleted-team@example.com").await;
    let (key, _) = create_key(&a, &owner, &team_id, "doomed").await;
    let (survivor_owner, survivor_team) = api_team(&a, "survivor@example.com").await;
    let (survivor, _) = create_key(&a, &survivor_owner, &survivor_team, "kept").await;
    for api in [&a, &b] {
        assert_eq!(whoami(api, &key, None).await.status, 200);
        assert_eq!(whoami(api, &survivor, None).await.status, 200);
    }

    // The only member leaves: the team, its API team and its keys go.
    let left = a
        .call(Some(&owner), "teams/leave", json!({ "teamId": team_id }))
        .await
        .ok();
    assert_eq!(left["teamDeleted"], true);
    let started = Instant::now();
    let refused = test_support::eventually(Duration::from_secs(1), || async {
        whoami(&b, &key, None).await.status == 401
    })
    .await;
    assert!(refused, "B still accepted after {:?}", started.elapsed());
    assert_eq!(whoami(&a, &key, None).await.status, 401);
    assert_eq!(whoami(&b, &survivor, None).await.status, 200);

    // Deleting an account deletes the teams it was alone in, on every replica too.
    assert_eq!(whoami(&b, &survivor, None).await.status, 200);
    a.call(Some(&survivor_owner), "users/delete", json!({}))
        .await
        .ok();
    let refused = test_support::eventually(Duration::from_secs(1), || async {
        whoami(&b, &survivor, None).await.status == 401
    })
    .await;
    assert!(refused, "B still accepted the deleted account's team key");
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn allowlists_match_ipv4_and_ipv6_and_forwarded_for_counts_only_from_trusted_proxies() {
    // `direct` believes no X-Forwarded-For; `proxied` trusts its loopback peer (our client)
    // as a proxy. Same database and namespace, so the same keys.
    let direct = TestApi::start().await;
    let proxied = direct
        .replica(|config| config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()])
        .await;
    let (owner, team_id) = api_team(&direct, "allow@example.com").await;
    let (key, _) = create_key(&direct, &owner, &team_id, "networks").await;

    // Empty list: everyone.
    assert_eq!(whoami(&direct, &key, None).await.status, 200);
    assert_eq!(
        whoami(&proxied, &key, Some("198.51.100.1")).await.status,
        200
    );

    let team = set_allowlist(
        &direct,
        &owner,
        &team_id,
        &[
            "2001:db8::/32",
            "203.0.113.0/24",
            "203.0.113.0/24",
            "192.0.2.7",
        ],
    )
    .await;
    assert_eq!(
        team["ipAllowlist"],
        json!(["192.0.2.7/32", "203.0.113.0/24", "2001:db8::/32"]),
        "normalised, deduplicated, IPv4 first"
    );

    // Without trusted proxies the peer (127.0.0.1) is the client, whatever the header says.
    let refused = whoami(&direct, &key, None).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.code(), "IP_NOT_ALLOWED");
    let spoofed = whoami(&direct, &key, Some("203.0.113.9")).await;
    assert_eq!(
        spoofed.status, 403,
        "a spoofed X-Forwarded-For changes nothing"
    );

    // Behind a trusted proxy: the rightmost untrusted hop.
    let cases = [
        ("203.0.113.9", 200),
        ("192.0.2.7", 200),
        ("192.0.2.8", 403),
        ("2001:db8::5", 200),
        ("2001:db9::5", 403),
        ("198.51.100.1", 403),
        // The client prepended an allowed address; the proxy appended the real one.
        ("203.0.113.9, 198.51.100.1", 403),
        ("198.51.100.1, 203.0.113.9", 200),
        ("198.51.100.1, 2001:db8::1, 127.0.0.1", 200),
    ];
    for (forwarded_for, status) in cases {
        let probe = whoami(&proxied, &key, Some(forwarded_for)).await;
        assert_eq!(probe.status, status, "X-Forwarded-For: {forwarded_for}");
    }
    // Without the header the proxy itself is the client.
    assert_eq!(whoami(&proxied, &key, None).await.status, 403);

    // The caller's own network allowed again.
    set_allowlist(&direct, &owner, &team_id, &["127.0.0.0/8"]).await;
    assert_eq!(whoami(&direct, &key, None).await.status, 200);
    proxied.stop().await;
    direct.stop().await;
}

#[tokio::test]
async fn failed_verifications_are_rate_limited_per_client_ip_and_never_lock_out_a_prefix() {
    let direct = TestApi::start_with(|config| config.api_keys.failures_per_minute = 3).await;
    let proxied = direct
        .replica(|config| {
            config.api_keys.failures_per_minute = 3;
            config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        })
        .await;
    let (owner, team_id) = api_team(&direct, "limits@example.com").await;
    let (good, _) = create_key(&direct, &owner, &team_id, "good").await;
    let (uncached, _) = create_key(&direct, &owner, &team_id, "uncached").await;
    assert_eq!(whoami(&direct, &good, None).await.status, 200);

    // Per IP: random keys until the limiter answers; none of them ran scrypt.
    let runs = direct.state.api_keys.scrypt_runs();
    let mut limited = None;
    for attempt in 1..=8 {
        let probe = whoami(&direct, &random_key(), None).await;
        if probe.status == 429 {
            limited = Some((attempt, probe));
            break;
        }
        assert_eq!(probe.status, 401);
    }
    let (attempt, probe) = limited.expect("random keys are rate limited");
    assert!(attempt <= 5, "limited only after {attempt} failures");
    assert_eq!(probe.code(), "RATE_LIMITED");
    assert!(
        probe
            .retry_after
            .is_some_and(|seconds| (1..=60).contains(&seconds))
    );
    assert_eq!(direct.state.api_keys.scrypt_runs(), runs);
    // Malformed keys are limited the same way.
    assert_eq!(whoami(&direct, "garbage", None).await.status, 429);
    // A key this replica has already verified keeps working from the limited IP; an
    // unverified one waits like everything else.
    assert_eq!(whoami(&direct, &good, None).await.status, 200);
    assert_eq!(whoami(&direct, &uncached, None).await.status, 429);

    // Issue 15: the prefix is public, so 21 wrong secrets for it from a stranger's address
    // made the real key answer 429 elsewhere. Failures count per client IP: the stranger is
    // limited, the key's owner is not, and the correct key verifies at once.
    let mut stranger_limited = false;
    for _ in 0..21 {
        let probe = whoami(&proxied, &wrong_secret(&uncached), Some("198.51.100.7")).await;
        assert!(
            probe.status == 401 || probe.status == 429,
            "{}",
            probe.status
        );
        stranger_limited |= probe.status == 429;
    }
    assert!(stranger_limited, "the guessing address is limited");
    assert_eq!(
        whoami(&proxied, &uncached, Some("203.0.113.50"))
            .await
            .status,
        200,
        "the owner of the prefix is not locked out"
    );
    assert_eq!(
        whoami(&proxied, &good, Some("203.0.113.51")).await.status,
        200
    );
    proxied.stop().await;
    direct.stop().await;
}

#[tokio::test]
async fn roles_and_the_sensitive_tier_guard_every_procedure() {
    let api = TestApi::start().await;
    let owner = api.login("owner@example.com").await;
    let admin = api.login("admin@example.com").await;
    let member = api.login("member@example.com").await;
    let outsider = api.login("outsider@example.com").await;
    let team_id = api
        .team_with(&owner, &[(&admin, "admin"), (&member, "member")])
        .await;
    let team = json!({ "teamId": team_id });

    // Enabling: owners and admins.
    let by_member = api
        .call(Some(&member), "apiTeams/enable", team.clone())
        .await;
    assert_eq!(by_member.status, 403);
    assert_eq!(by_member.code(), "FORBIDDEN");
    let by_outsider = api
        .call(Some(&outsider), "apiTeams/enable", team.clone())
        .await;
    assert_eq!(by_outsider.code(), "NOT_FOUND");
    let no_session = api.call(None, "apiTeams/enable", team.clone()).await;
    assert_eq!(no_session.status, 401);
    let allowlist_early = api
        .call(
            Some(&owner),
            "apiTeams/setIpAllowlist",
            json!({ "teamId": team_id, "cidrs": [] }),
        )
        .await;
    assert_eq!(allowlist_early.code(), "API_NOT_ENABLED");
    api.call(Some(&admin), "apiTeams/enable", team.clone())
        .await
        .ok();

    // Keys: admins create and revoke; members read; outsiders see nothing.
    let (_, by_admin) = create_key(&api, &admin, &team_id, "admin's").await;
    let key_id = json!({ "apiKeyId": by_admin["apiKeyId"] });
    let member_create = api
        .call(
            Some(&member),
            "apiKeys/create",
            json!({ "teamId": team_id, "name": "nope" }),
        )
        .await;
    assert_eq!(member_create.code(), "FORBIDDEN");
    let member_allowlist = api
        .call(
            Some(&member),
            "apiTeams/setIpAllowlist",
            json!({ "teamId": team_id, "cidrs": ["10.0.0.0/8"] }),
        )
        .await;
    assert_eq!(member_allowlist.code(), "FORBIDDEN");
    assert_eq!(
        api.call(Some(&member), "apiKeys/revoke", key_id.clone())
            .await
            .code(),
        "FORBIDDEN"
    );
    let listed = api
        .query(Some(&member), "apiKeys/list", team.clone())
        .await
        .ok();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let seen = api
        .query(Some(&member), "apiTeams/get", team.clone())
        .await
        .ok();
    assert_eq!(seen["plan"]["planId"], "free");
    assert_eq!(
        api.query(Some(&outsider), "apiTeams/get", team.clone())
            .await
            .code(),
        "NOT_FOUND"
    );
    assert_eq!(
        api.query(Some(&outsider), "apiKeys/list", team.clone())
            .await
            .code(),
        "NOT_FOUND"
    );
    let outsider_revoke = api
        .call(Some(&outsider), "apiKeys/revoke", key_id.clone())
        .await;
    assert_eq!(outsider_revoke.status, 404);
    assert_eq!(outsider_revoke.code(), "NOT_FOUND");
    let unknown = api
        .call(
            Some(&owner),
            "apiKeys/revoke",
            json!({ "apiKeyId": uuid::Uuid::new_v4() }),
        )
        .await;
    assert_eq!(unknown.code(), "NOT_FOUND");

    // Sensitive: an old session may read, not enable (issue 15: enabling hands out API
    // access), create, revoke or change networks.
    age_sessions(&api, &admin).await;
    for (procedure, input) in [
        ("apiTeams/enable", team.clone()),
        (
            "apiKeys/create",
            json!({ "teamId": team_id, "name": "stale" }),
        ),
        ("apiKeys/revoke", key_id.clone()),
        (
            "apiTeams/setIpAllowlist",
            json!({ "teamId": team_id, "cidrs": [] }),
        ),
    ] {
        let stale = api.call(Some(&admin), procedure, input).await;
        assert_eq!(stale.status, 403, "{procedure}");
        assert_eq!(stale.code(), "SESSION_NOT_FRESH", "{procedure}");
    }
    api.query(Some(&admin), "apiKeys/list", team.clone())
        .await
        .ok();
    // The owner's fresh session still can.
    let revoked = api
        .call(Some(&owner), "apiKeys/revoke", key_id.clone())
        .await
        .ok();
    assert!(revoked["revokedAt"].is_i64());
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
