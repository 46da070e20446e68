//! The verified-key cache: one scrypt per key, and revocations, allowlist changes and team
//! deletions reaching every replica before the cache expires.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::TestApi;
use crate::fixtures::{api_team, create_key, random_key, set_allowlist, whoami, wrong_secret};

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
