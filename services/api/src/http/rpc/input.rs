//! The input side of the wire protocol: the `{json, meta}` envelope from a POST body or a GET
//! `?data=`, `meta` applied; then the input is typed and checked by the step the REST codec
//! shares ([`crate::http::validation::decode_input`]).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::Method;
use serde_json::Value;

use crate::http::error::ApiError;
use crate::http::validation::{Input, decode_input};
use axum::RequestExt;

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
        // The router lets only POST reach a mutation; this keeps it so if one is mis-declared.
        if request.method() != Method::POST {
            return Err(ApiError::MethodNotSupported);
        }
        let body = read_body(request).await?;
        decode(envelope_from_body(&body)?).map(RpcInput)
    }
}

impl<S: Send + Sync, T: Input> FromRequest<S> for RpcQuery<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let envelope = match *request.method() {
            Method::GET => envelope_from_query(request.uri().query())?,
            Method::POST => envelope_from_body(&read_body(request).await?)?,
            _ => return Err(ApiError::MethodNotSupported),
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
    pub(crate) json: Option<Value>,
    #[serde(default)]
    pub(crate) meta: Vec<Value>,
}

pub(crate) fn envelope_from_body(body: &[u8]) -> Result<Envelope, ApiError> {
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

pub(crate) fn envelope_from_query(query: Option<&str>) -> Result<Envelope, ApiError> {
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

/// Unwrap the envelope: apply `meta`, then type and check the input as every input is
/// ([`decode_input`]).
pub fn decode<T: Input>(envelope: Envelope) -> Result<T, ApiError> {
    let mut json = envelope.json.unwrap_or(Value::Null);
    for entry in &envelope.meta {
        apply_meta(&mut json, entry)?;
    }
    decode_input(json)
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
