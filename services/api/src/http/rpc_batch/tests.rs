#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn only_procedure_paths_are_reachable() {
    assert_eq!(
        procedure_uri("http://127.0.0.1:3901/rpc/journalEntries/list?data=%7B%7D")
            .unwrap()
            .to_string(),
        "/rpc/journalEntries/list?data=%7B%7D"
    );
    assert_eq!(
        procedure_uri("/rpc/users/me").unwrap().to_string(),
        "/rpc/users/me"
    );
    for outside in [
        "http://x/auth/dev/login",
        "http://x/api/v1/journal-entries",
        "http://x/rpc/../auth/dev/login",
        "http://x/rpcx/users/me",
        "http://x/readyz",
    ] {
        assert!(
            matches!(procedure_uri(outside), Err(ApiError::ProcedureNotFound)),
            "{outside}"
        );
    }
}

#[test]
fn items_cannot_speak_for_the_connection() {
    for name in [
        "cookie",
        "origin",
        "referer",
        "host",
        "sec-fetch-site",
        "x-forwarded-for",
        "forwarded",
        "x-real-ip",
        "content-length",
        "x-orpc-batch",
    ] {
        assert!(is_connection_header(name), "{name}");
    }
    for name in ["authorization", "last-event-id", "x-request-id"] {
        assert!(!is_connection_header(name), "{name}");
    }
}

#[test]
fn repeated_response_headers_become_a_list() {
    let mut headers = HeaderMap::new();
    headers.append(SET_COOKIE, HeaderValue::from_static("a=1"));
    headers.append(SET_COOKIE, HeaderValue::from_static("b=2"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let fields = item_headers(&headers);
    assert_eq!(fields.len(), 1);
    assert!(matches!(
        fields.get("set-cookie"),
        Some(HeaderField::Many(values)) if values == &["a=1", "b=2"]
    ));
}
