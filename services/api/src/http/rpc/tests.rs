#![allow(clippy::unwrap_used)]

use super::input::{envelope_from_body, envelope_from_query};
use super::*;
use crate::http::error::ApiError;
use crate::http::validation::Input;
use crate::http::validation::Issue;
use crate::http::validation::Issues;
use crate::http::validation::PathSegment;

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Probe {
    title: String,
    created_after: Option<i64>,
    #[allow(dead_code)]
    tags: Option<Vec<String>>,
}
impl Input for Probe {
    fn check(&self, issues: &mut Issues) {
        issues.string_length("title", &self.title, 1, 5);
    }
}

fn envelope(body: &str) -> Envelope {
    envelope_from_body(body.as_bytes()).unwrap()
}

#[test]
fn date_meta_becomes_epoch_milliseconds() {
    let probe: Probe = decode(envelope(
        r#"{"json":{"title":"a","createdAfter":"2020-01-01T00:00:00.000Z"},"meta":[[1,"createdAfter"]]}"#,
    ))
    .unwrap();
    assert_eq!(probe.created_after, Some(1_577_836_800_000));
}

#[test]
fn meta_pointing_nowhere_is_malformed_and_unknown_codes_are_ignored() {
    let missing = decode::<Probe>(envelope(r#"{"json":{"title":"a"},"meta":[[1,"b"]]}"#));
    assert!(matches!(missing, Err(ApiError::Malformed)));
    let unknown =
        decode::<Probe>(envelope(r#"{"json":{"title":"a"},"meta":[[99,"title"]]}"#)).unwrap();
    assert_eq!(unknown.title, "a");
}

#[test]
fn a_body_without_the_envelope_is_undefined_input() {
    let Err(ApiError::Validation(issues)) = decode::<Probe>(envelope(r#"{"title":"x"}"#)) else {
        panic!("expected a validation error");
    };
    assert_eq!(issues[0].code, "invalid_type");
    assert!(issues[0].path.is_empty());
    assert!(issues[0].message.contains("received undefined"));
}

#[test]
fn type_errors_name_the_field_path_with_array_indexes() {
    let Err(ApiError::Validation(issues)) =
        decode::<Probe>(envelope(r#"{"json":{"title":"a","tags":["x",3]}}"#))
    else {
        panic!("expected a validation error");
    };
    assert_eq!(
        issues[0].path,
        vec![PathSegment::Key("tags".into()), PathSegment::Index(1)]
    );
    assert_eq!(issues[0].code, "invalid_type");
    assert_eq!(issues[0].expected.as_deref(), Some("string"));
}

#[test]
fn checks_run_after_typing_and_report_zod_codes() {
    let Err(ApiError::Validation(issues)) =
        decode::<Probe>(envelope(r#"{"json":{"title":"toolong"}}"#))
    else {
        panic!("expected a validation error");
    };
    assert_eq!(issues[0].code, "too_big");
    assert_eq!(issues[0].maximum, Some(5));
}

#[test]
fn unknown_fields_are_named() {
    let Err(ApiError::Validation(issues)) =
        decode::<Probe>(envelope(r#"{"json":{"title":"a","titel":"b"}}"#))
    else {
        panic!("expected a validation error");
    };
    assert_eq!(issues[0].code, "unrecognized_keys");
    assert_eq!(issues[0].keys, Some(vec!["titel".to_owned()]));
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Hostile {
    limit: Option<i64>,
    #[allow(dead_code)]
    small: Option<u8>,
    at: Option<crate::http::validation::EpochMillis>,
    #[allow(dead_code)]
    texts: Option<Vec<String>>,
}
impl Input for Hostile {}

fn issues_of(body: &str) -> Vec<Issue> {
    match decode::<Hostile>(envelope(body)) {
        Err(ApiError::Validation(issues)) => issues,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn a_nul_anywhere_is_an_issue_at_its_path() {
    let issues = issues_of(r#"{"json":{"texts":["ok","a\u0000"],"x\u0000":1}}"#);
    let paths: Vec<_> = issues.iter().map(|issue| issue.path.clone()).collect();
    assert_eq!(
        paths,
        vec![
            vec![PathSegment::Key("texts".into()), PathSegment::Index(1)],
            vec![PathSegment::Key("x\0".into())],
        ]
    );
    assert!(issues.iter().all(|issue| issue.message.contains("NUL")));
    // Other control characters are text like any other.
    decode::<Hostile>(envelope(r#"{"json":{"texts":["\u0001\t\u001f"]}}"#)).unwrap();
}

#[test]
fn integral_floats_are_integers_and_fractions_say_what_is_wrong() {
    for (body, limit) in [
        (r#"{"json":{"limit":3.0}}"#, 3),
        (r#"{"json":{"limit":1e2}}"#, 100),
        (r#"{"json":{"limit":-0.0}}"#, 0),
    ] {
        assert_eq!(
            decode::<Hostile>(envelope(body)).unwrap().limit,
            Some(limit)
        );
    }
    let issues = issues_of(r#"{"json":{"limit":3.5}}"#);
    assert_eq!(
        issues[0].message,
        "Invalid input: expected an integer, received 3.5"
    );
    assert_eq!(issues[0].expected.as_deref(), Some("int"));
    let issues = issues_of(r#"{"json":{"limit":1e300}}"#);
    assert!(
        issues[0].message.contains("expected an integer"),
        "{issues:?}"
    );
    let issues = issues_of(r#"{"json":{"small":256}}"#);
    assert_eq!((issues[0].code, issues[0].maximum), ("too_big", Some(255)));
    let issues = issues_of(r#"{"json":{"small":-1}}"#);
    assert_eq!((issues[0].code, issues[0].minimum), ("too_small", Some(0)));
}

#[test]
fn timestamps_are_bounded_to_the_years_1970_to_9999() {
    for body in [
        r#"{"json":{"at":0}}"#,
        r#"{"json":{"at":253402300799999}}"#,
        r#"{"json":{"at":"1970-01-01T00:00:00.000Z"},"meta":[[1,"at"]]}"#,
    ] {
        assert!(
            decode::<Hostile>(envelope(body)).unwrap().at.is_some(),
            "{body}"
        );
    }
    for (body, code) in [
        (r#"{"json":{"at":8210266876799999}}"#, "too_big"),
        (r#"{"json":{"at":253402300800000}}"#, "too_big"),
        (r#"{"json":{"at":-210866803200001}}"#, "too_small"),
        (r#"{"json":{"at":-1}}"#, "too_small"),
        (
            r#"{"json":{"at":"1969-12-31T23:59:59.999Z"},"meta":[[1,"at"]]}"#,
            "too_small",
        ),
    ] {
        let issues = issues_of(body);
        assert_eq!(issues[0].code, code, "{body}: {issues:?}");
        assert_eq!(issues[0].path, vec![PathSegment::Key("at".into())]);
        assert!(
            issues[0].message.contains("epoch milliseconds"),
            "{issues:?}"
        );
    }
    // A JS Date's extended year (beyond RFC 3339) is not a date we read.
    assert!(matches!(
        decode::<Hostile>(envelope(
            r#"{"json":{"at":"+275760-09-13T00:00:00.000Z"},"meta":[[1,"at"]]}"#
        )),
        Err(ApiError::Malformed)
    ));
}

#[test]
fn malformed_json_and_get_data() {
    assert!(matches!(
        envelope_from_body(b"{\"json\":"),
        Err(ApiError::Malformed)
    ));
    let from_query =
        envelope_from_query(Some("data=%7B%22json%22%3A%7B%22title%22%3A%22q%22%7D%7D")).unwrap();
    let probe: Probe = decode(from_query).unwrap();
    assert_eq!(probe.title, "q");
    assert!(envelope_from_query(None).unwrap().json.is_none());
}
