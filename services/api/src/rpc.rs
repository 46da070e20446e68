//! oRPC's RPC wire protocol (see `../shared/reference/orpc-wire.md`, Part A) as axum
//! extractors and a response type:
//!
//! - [`RpcInput<T>`]: a procedure called with POST (any method but GET, like oRPC's matcher);
//!   GET answers 405 `METHOD_NOT_SUPPORTED` (oRPC's StrictGetMethodPlugin).
//! - [`RpcQuery<T>`]: a GET-able query: `?data=<{json,meta}>` on GET, or the POST body.
//! - [`Rpc<T>`]: a success, `200 {"json": <output>}`.
//!
//! Inputs arrive as `{"json": <input>, "meta": [[code, ...path], ...]}`. `meta` is applied
//! before the input is typed: a Date (code 1) becomes epoch milliseconds, so every timestamp
//! field accepts either a JS `Date` or a number, and outputs carry plain epoch milliseconds
//! (ARCHITECTURE §9) with no `meta`. Typing errors and the procedure's own checks become a
//! `400 BAD_REQUEST` with zod-shaped `data.issues` (code, path, message).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::{Json, RequestExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;
use crate::validation::{Issue, Issues, PathSegment};

/// A procedure's input: typed by serde, then checked by [`Input::check`].
pub trait Input: DeserializeOwned + Send + 'static {
    /// Add an issue for every field that is well-typed but not acceptable.
    fn check(&self, _issues: &mut Issues) {}
}

/// No input at all (`{}` body, or no body). Any `json` sent is ignored, as oRPC ignores input
/// for procedures without an input schema.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoInput;

impl<'de> serde::Deserialize<'de> for NoInput {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(NoInput)
    }
}

impl Input for NoInput {}

/// The input of a procedure that is called with POST (not GET-able).
#[derive(Debug)]
pub struct RpcInput<T>(pub T);

/// The input of a GET-able query procedure (GET with `?data=`, or POST).
#[derive(Debug)]
pub struct RpcQuery<T>(pub T);

/// Bodies over this size answer 413 (entries hold at most 100,000 characters).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

impl<S: Send + Sync, T: Input> FromRequest<S> for RpcInput<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if request.method() == Method::GET {
            return Err(ApiError::MethodNotSupported);
        }
        let body = read_body(request).await?;
        decode(envelope_from_body(&body)?).map(RpcInput)
    }
}

impl<S: Send + Sync, T: Input> FromRequest<S> for RpcQuery<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let envelope = if request.method() == Method::GET {
            envelope_from_query(request.uri().query())?
        } else {
            let body = read_body(request).await?;
            envelope_from_body(&body)?
        };
        decode(envelope).map(RpcQuery)
    }
}

async fn read_body(request: Request) -> Result<Bytes, ApiError> {
    let limited = request.with_limited_body();
    axum::body::to_bytes(limited.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)
}

/// The `{json, meta}` envelope; `json: None` is oRPC's `undefined` input.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Envelope {
    #[serde(default)]
    json: Option<Value>,
    #[serde(default)]
    meta: Vec<Value>,
}

impl Envelope {
    /// Input given as plain JSON (non-RPC endpoints such as the dev login).
    pub fn of(json: Value) -> Self {
        Self {
            json: Some(json),
            meta: Vec::new(),
        }
    }
}

fn envelope_from_body(body: &[u8]) -> Result<Envelope, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Envelope::default());
    }
    let value: Value = serde_json::from_slice(body).map_err(|_| ApiError::Malformed)?;
    match value {
        // A body without the envelope is not malformed: its input is `undefined` (C09).
        Value::Object(mut fields) => Ok(Envelope {
            json: fields.remove("json"),
            meta: match fields.remove("meta") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(meta)) => meta,
                Some(_) => return Err(ApiError::Malformed),
            },
        }),
        _ => Ok(Envelope::default()),
    }
}

fn envelope_from_query(query: Option<&str>) -> Result<Envelope, ApiError> {
    // oRPC reads the last `data` parameter.
    let data = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(name, _)| name == "data")
        .map(|(_, value)| value.into_owned())
        .last();
    match data {
        None => Ok(Envelope::default()),
        Some(data) => envelope_from_body(data.as_bytes()),
    }
}

/// Apply `meta`, type the input, run its checks.
pub fn decode<T: Input>(envelope: Envelope) -> Result<T, ApiError> {
    let mut json = envelope.json.unwrap_or(Value::Null);
    for entry in &envelope.meta {
        apply_meta(&mut json, entry)?;
    }
    let input: T = type_input(json)?;
    let mut issues = Issues::default();
    input.check(&mut issues);
    issues.into_result()?;
    Ok(input)
}

fn type_input<T: DeserializeOwned>(json: Value) -> Result<T, ApiError> {
    let received = describe(&json);
    serde_path_to_error::deserialize(json).map_err(|error| {
        let path: Vec<PathSegment> = error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(PathSegment::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(PathSegment::Index(*index)),
                serde_path_to_error::Segment::Enum { variant } => {
                    Some(PathSegment::Key(variant.clone()))
                }
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        ApiError::Validation(vec![Issue::from_serde(
            path,
            &error.into_inner().to_string(),
            received,
        )])
    })
}

/// What JS would call the type of the root value, for "received undefined" messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "undefined",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Apply one `[code, ...path]` entry. A path that does not exist is a malformed request
/// (C07); a code we do not know is ignored (C08).
fn apply_meta(json: &mut Value, entry: &Value) -> Result<(), ApiError> {
    let Some(items) = entry.as_array() else {
        return Err(ApiError::Malformed);
    };
    let Some(code) = items.first().and_then(Value::as_u64) else {
        return Err(ApiError::Malformed);
    };
    let mut target = json;
    for segment in &items[1..] {
        target = match segment {
            Value::String(key) => target.get_mut(key.as_str()),
            Value::Number(index) => index
                .as_u64()
                .and_then(|index| usize::try_from(index).ok())
                .and_then(|index| target.get_mut(index)),
            _ => None,
        }
        .ok_or(ApiError::Malformed)?;
    }
    match code {
        // Date: ISO string (or null for an invalid Date) -> epoch milliseconds.
        1 => {
            *target = match target.as_str() {
                Some(iso) => chrono::DateTime::parse_from_rfc3339(iso)
                    .map(|at| Value::from(at.timestamp_millis()))
                    .map_err(|_| ApiError::Malformed)?,
                None => Value::Null,
            };
        }
        // bigint: decimal string -> a number when it fits.
        0 => {
            if let Some(number) = target.as_str().and_then(|text| text.parse::<i64>().ok()) {
                *target = Value::from(number);
            }
        }
        // NaN and undefined arrive as null already; URL, RegExp, Set and Map as strings and
        // arrays, which is what our inputs would take anyway.
        _ => {}
    }
    Ok(())
}

/// A successful RPC response: `200 {"json": <output>}`.
#[derive(Debug)]
pub struct Rpc<T>(pub T);

#[derive(Serialize)]
struct OutputEnvelope<T> {
    json: T,
}

impl<T: Serialize> IntoResponse for Rpc<T> {
    fn into_response(self) -> Response {
        Json(OutputEnvelope { json: self.0 }).into_response()
    }
}

/// An output of `undefined`, sent as `{}` like oRPC.
#[derive(Debug)]
pub struct RpcDone;

impl IntoResponse for RpcDone {
    fn into_response(self) -> Response {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
        let Err(ApiError::Validation(issues)) = decode::<Probe>(envelope(r#"{"title":"x"}"#))
        else {
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

    #[test]
    fn malformed_json_and_get_data() {
        assert!(matches!(
            envelope_from_body(b"{\"json\":"),
            Err(ApiError::Malformed)
        ));
        let from_query =
            envelope_from_query(Some("data=%7B%22json%22%3A%7B%22title%22%3A%22q%22%7D%7D"))
                .unwrap();
        let probe: Probe = decode(from_query).unwrap();
        assert_eq!(probe.title, "q");
        assert!(envelope_from_query(None).unwrap().json.is_none());
    }
}
