use super::*;

#[test]
fn only_failures_past_the_quota_block_and_the_block_names_its_wait() {
    let limiter = FailureLimiter::<IpAddr>::per_minute(2);
    let ip: IpAddr = [192, 0, 2, 1].into();
    let other: IpAddr = [192, 0, 2, 2].into();
    limiter.record(ip);
    limiter.record(ip);
    assert!(
        limiter.blocked_for(&ip).is_none(),
        "the quota itself is allowed"
    );
    limiter.record(ip);
    let wait = limiter.blocked_for(&ip);
    assert!(
        wait.is_some_and(|wait| wait <= Duration::from_secs(30)),
        "{wait:?}"
    );
    assert!(limiter.blocked_for(&other).is_none());
}

#[test]
fn last_used_is_queued_once_per_interval() {
    let last_used = LastUsed::default();
    let id = ApiKeyId::generate();
    last_used.touch(id);
    last_used.touch(id);
    assert_eq!(last_used.take(), vec![id]);
    last_used.touch(id);
    assert!(last_used.take().is_empty());
}

#[test]
fn allowlists_match_v4_and_v6_and_empty_allows_all() {
    let list = AllowList {
        networks: vec![
            "203.0.113.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ],
        loaded_at: Instant::now(),
    };
    assert!(list.allows([203, 0, 113, 9].into()));
    assert!(!list.allows([198, 51, 100, 1].into()));
    assert!(list.allows("2001:db8::1".parse().unwrap()));
    assert!(!list.allows("2001:db9::1".parse().unwrap()));
    let empty = AllowList {
        networks: Vec::new(),
        loaded_at: Instant::now(),
    };
    assert!(empty.allows([198, 51, 100, 1].into()));
}
