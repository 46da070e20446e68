#![allow(clippy::expect_used)]

use super::*;

#[test]
fn a_key_gets_its_plans_rate_and_then_a_retry_after() {
    let limiter = KeyRateLimiter::default();
    let key = ApiKeyId::generate();
    let other = ApiKeyId::generate();
    assert!(limiter.check(key, 2).is_ok());
    assert!(limiter.check(key, 2).is_ok());
    let retry_after = limiter
        .check(key, 2)
        .expect_err("the third request in a second");
    assert!(retry_after >= 1);
    assert!(limiter.check(other, 2).is_ok(), "keys are limited apart");
}

#[test]
fn headers_say_the_limit_what_is_left_and_when_it_resets() {
    let resets_at = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    let usage = Usage {
        limit: 10,
        used: 12,
        resets_at,
        exceeded: true,
    };
    let mut headers = HeaderMap::new();
    usage.write_headers(&mut headers);
    assert_eq!(headers["x-ratelimit-limit"], "10");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert_eq!(headers["x-ratelimit-reset"], "1800000000");
}
