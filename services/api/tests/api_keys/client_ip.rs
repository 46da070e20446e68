//! The client IP: allowlists (IPv4, IPv6, `X-Forwarded-For` from trusted proxies) and the
//! rate limit on failed verifications.

use serde_json::json;

use crate::common::TestApi;
use crate::fixtures::{api_team, create_key, random_key, set_allowlist, whoami, wrong_secret};

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
