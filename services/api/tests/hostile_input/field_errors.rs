//! Hostile values in one field (NUL characters, timestamps out of range, fractional
//! integers) are 400s that name the field.

use serde_json::{Value, json};

use crate::common::{Answer, TestApi};

fn issue_messages(answer: &Answer) -> Vec<String> {
    answer.json["data"]["issues"]
        .as_array()
        .map(|issues| {
            issues
                .iter()
                .map(|issue| issue["message"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A NUL character anywhere is a 400 naming the field, on every input (it was a 500:
/// Postgres refuses `\u0000` in text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_is_a_bad_request_naming_the_field() {
    let api = TestApi::start().await;
    let user = api.login("nul@example.com").await;
    let team_id = api.team_with(&user, &[]).await;
    let cases = [
        (
            "journalEntries/create",
            json!({"title": "a\u{0}b", "content": "x"}),
            "title",
        ),
        (
            "journalEntries/create",
            json!({"title": "t", "content": "x", "tags": ["ok", "b\u{0}"]}),
            "tags.1",
        ),
        ("teams/create", json!({"name": "\u{0}"}), "name"),
        (
            "teams/rename",
            json!({"teamId": team_id, "name": "x\u{0}"}),
            "name",
        ),
        (
            "teams/invite",
            json!({"teamId": team_id, "email": "a\u{0}@example.com", "role": "member"}),
            "email",
        ),
        ("users/update", json!({"name": "n\u{0}"}), "name"),
        ("prompts/create", json!({"text": "p\u{0}"}), "text"),
        ("journalEntries/list", json!({"q": "\u{0}"}), "q"),
        ("journalEntries/list", json!({"tag": "\u{0}"}), "tag"),
        (
            "logs/list",
            json!({"teamId": team_id, "pathPrefix": "/\u{0}"}),
            "pathPrefix",
        ),
        (
            "logs/list",
            json!({"teamId": team_id, "apiKeyPrefix": "\u{0}"}),
            "apiKeyPrefix",
        ),
    ];
    for (procedure, input, path) in cases {
        let answer = api.call(Some(&user), procedure, input).await;
        assert_eq!(answer.status, 400, "{procedure}: {}", answer.json);
        assert_eq!(answer.code(), "BAD_REQUEST");
        assert_eq!(answer.issue_paths(), vec![path.to_owned()], "{procedure}");
        assert!(
            issue_messages(&answer)[0].contains("NUL"),
            "{}",
            answer.json
        );
    }
    // The dev login (plain JSON).
    let response = api
        .client
        .post(format!("{}/auth/dev/login", api.base_url))
        .json(&json!({"email": "x@example.com", "name": "a\u{0}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["issues"][0]["path"], json!(["name"]));
    api.stop().await;
}

/// Epoch-millisecond inputs are bounded to 1970..=9999: outside it a 400 naming the field
/// (one value panicked with `DateTime + TimeDelta overflowed`, the others were 500s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_out_of_range_are_bad_requests_naming_the_field() {
    let api = TestApi::start().await;
    let user = api.login("time@example.com").await;
    let team_id = api.team_with(&user, &[]).await;
    for (procedure, field, value) in [
        (
            "journalEntries/list",
            "createdAfter",
            8_210_266_876_799_999_i64,
        ),
        ("journalEntries/list", "createdBefore", -210_866_803_200_001),
        (
            "journalEntries/list",
            "createdBefore",
            -8_334_601_228_800_000,
        ),
        ("journalEntries/list", "createdAfter", 253_402_300_800_000),
        ("logs/list", "from", 8_210_266_876_799_999),
        ("logs/list", "to", -8_334_601_228_800_000),
        ("logs/list", "from", -1),
    ] {
        let mut input = json!({ field: value });
        if procedure == "logs/list" {
            input["teamId"] = json!(team_id);
        }
        let answer = api.call(Some(&user), procedure, input).await;
        assert_eq!(
            answer.status, 400,
            "{procedure} {field}={value}: {}",
            answer.json
        );
        assert_eq!(answer.issue_paths(), vec![field.to_owned()]);
        assert!(
            issue_messages(&answer)[0].contains("epoch milliseconds"),
            "{}",
            answer.json
        );
    }
    // The edges themselves are fine.
    for value in [0_i64, 253_402_300_799_999] {
        for field in ["createdAfter", "createdBefore"] {
            api.call(Some(&user), "journalEntries/list", json!({ field: value }))
                .await
                .ok();
        }
    }
    // A JS Date far in the future (through `meta`) is refused the same way.
    let response = api
        .client
        .post(format!("{}/rpc/journalEntries/list", api.base_url))
        .bearer_auth(&user.token)
        .json(&json!({"json": {"createdAfter": "+275760-09-13T00:00:00.000Z"}, "meta": [[1, "createdAfter"]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    api.stop().await;
}

/// `3.0` and `1e2` are integers (as zod sees them); `3.5` is "expected an integer, received
/// 3.5", not "expected number, received number".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integral_floats_are_integers_and_fractions_say_so() {
    let api = TestApi::start().await;
    let user = api.login("ints@example.com").await;
    for _ in 0..3 {
        api.call(
            Some(&user),
            "journalEntries/create",
            json!({"title": "t", "content": "c"}),
        )
        .await
        .ok();
    }
    // Raw bodies: serde_json would print 3.0 as 3.0 but 1e2 as 100.0.
    for (body, expected_items) in [
        (r#"{"json":{"limit":2.0}}"#, 2),
        (r#"{"json":{"limit":1e0}}"#, 1),
        (r#"{"json":{"limit":1e2}}"#, 3),
    ] {
        let response = api
            .client
            .post(format!("{}/rpc/journalEntries/list", api.base_url))
            .bearer_auth(&user.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{body}");
        let page: Value = response.json().await.unwrap();
        assert_eq!(
            page["json"]["items"].as_array().unwrap().len(),
            expected_items,
            "{body}"
        );
    }
    let answer = api
        .call(Some(&user), "journalEntries/list", json!({"limit": 3.5}))
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.issue_paths(), vec!["limit".to_owned()]);
    assert_eq!(
        issue_messages(&answer),
        vec!["Invalid input: expected an integer, received 3.5".to_owned()]
    );
    assert_eq!(answer.json["data"]["issues"][0]["expected"], "int");
    // Beyond what the field holds: a range error, not a type error.
    let answer = api
        .call(Some(&user), "journalEntries/list", json!({"limit": 1e300}))
        .await;
    assert_eq!(answer.status, 400, "{}", answer.json);
    assert!(
        issue_messages(&answer)[0].contains("expected an integer"),
        "{}",
        answer.json
    );
    api.stop().await;
}
