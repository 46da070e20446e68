use axum::http::{HeaderMap, HeaderValue};

use super::types::{
    LOGGED_HEADERS, MAX_HEADER_VALUE_CHARS, MAX_PATH_CHARS, RedactedHeaders, bounded_text,
    redact_secrets,
};

const KEY: &str = "jk_live_abcd1234_s3cr3tS3CR3Ts3cr3tS3CR3Ts3cr3tS3CR3Ts3cr3tS3C";

#[test]
fn credentials_are_redacted_and_an_api_key_keeps_only_its_prefix() {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_static(KEY));
    headers.insert("authorization", HeaderValue::from_static("Bearer s3cr3t"));
    headers.insert("cookie", HeaderValue::from_static("session=s3cr3t"));
    headers.insert("x-refresh-token", HeaderValue::from_static("s3cr3t"));
    headers.insert("user-agent", HeaderValue::from_static("curl/8"));
    headers.append("accept", HeaderValue::from_static("a/b"));
    headers.append("accept", HeaderValue::from_static("c/d"));
    let kept = RedactedHeaders::from_headers(&headers, Some("jk_live_abcd1234"));
    let text = serde_json::to_string(&kept).unwrap_or_default();
    assert!(!text.contains("s3cr3t"), "{text}");
    assert_eq!(kept.0["x-api-key"], "jk_live_abcd1234…[redacted]");
    assert_eq!(kept.0["authorization"], "[redacted]");
    assert_eq!(kept.0["cookie"], "[redacted]");
    assert!(
        !kept.0.contains_key("x-refresh-token"),
        "not on the allow-list"
    );
    assert_eq!(kept.0["user-agent"], "curl/8");
    assert_eq!(kept.0["accept"], "a/b, c/d");
    let without_prefix = RedactedHeaders::from_headers(&headers, None);
    assert_eq!(without_prefix.0["x-api-key"], "[redacted]");
}

/// Issue 15: a full key sent under another header name (or inside any value) was stored.
#[test]
fn keys_and_bearer_values_are_redacted_by_value_in_any_header() {
    let mut headers = HeaderMap::new();
    headers.insert(
        "user-agent",
        HeaderValue::from_str(&format!("bot/1 (key {KEY})"))
            .unwrap_or(HeaderValue::from_static("")),
    );
    headers.insert("referer", HeaderValue::from_static("Bearer abc.def.ghi"));
    headers.insert(
        "origin",
        HeaderValue::from_static("https://x.test; session=s3cr3t"),
    );
    let kept = RedactedHeaders::from_headers(&headers, None);
    let text = serde_json::to_string(&kept).unwrap_or_default();
    assert!(
        !text.contains("s3cr3t") && !text.contains("abc.def"),
        "{text}"
    );
    assert_eq!(
        kept.0["user-agent"],
        "bot/1 (key jk_live_abcd1234…[redacted])"
    );
    assert_eq!(kept.0["referer"], "[redacted]");
    assert_eq!(kept.0["origin"], "[redacted]");
    // In the path too, and a key-like token of another shape never keeps its tail.
    assert_eq!(
        bounded_text(&format!("/api/v1/{KEY}/x"), MAX_PATH_CHARS),
        "/api/v1/jk_live_abcd1234…[redacted]/x"
    );
    assert_eq!(
        redact_secrets("jk_bbbb2222_TOPSECRET"),
        "jk_bbbb2222…[redacted]"
    );
    assert_eq!(
        redact_secrets("jk_liveabcdefghijklmnopqrstuvwxyz"),
        "jk_…[redacted]"
    );
    assert_eq!(
        redact_secrets("prefix jk_live_abcd1234 only"),
        "prefix jk_live_abcd1234 only"
    );
}

/// Issue 15: 30 KB of junk headers made a 31.6 KB row (one reached 380 KB).
#[test]
fn junk_headers_are_left_out_and_every_kept_value_is_capped() {
    let mut headers = HeaderMap::new();
    let junk = "x".repeat(30_000);
    for index in 0..20 {
        headers.insert(
            axum::http::HeaderName::from_bytes(format!("x-junk-{index}").as_bytes())
                .unwrap_or(axum::http::HeaderName::from_static("x-junk")),
            HeaderValue::from_str(&junk).unwrap_or(HeaderValue::from_static("")),
        );
    }
    for _ in 0..50 {
        headers.append(
            "accept",
            HeaderValue::from_str(&junk).unwrap_or(HeaderValue::from_static("")),
        );
    }
    headers.insert(
        "user-agent",
        HeaderValue::from_str(&junk).unwrap_or(HeaderValue::from_static("")),
    );
    let kept = RedactedHeaders::from_headers(&headers, None);
    assert_eq!(kept.0.keys().collect::<Vec<_>>(), ["accept", "user-agent"]);
    for value in kept.0.values() {
        assert_eq!(
            value.chars().count(),
            MAX_HEADER_VALUE_CHARS + 1,
            "cut, with …"
        );
    }
    let size = serde_json::to_string(&kept).unwrap_or_default().len();
    assert!(size < 1_000, "{size} bytes");
    // Every allowed header at its cap still makes a small row.
    let mut all = HeaderMap::new();
    for name in LOGGED_HEADERS {
        all.insert(
            name,
            HeaderValue::from_str(&junk).unwrap_or(HeaderValue::from_static("")),
        );
    }
    let size = serde_json::to_string(&RedactedHeaders::from_headers(&all, None))
        .unwrap_or_default()
        .len();
    assert!(size < 8 * 1024, "{size} bytes");
    assert_eq!(bounded_text("ééé", 2), "éé…");
}
