//! The checks inputs get at the edge, producing zod-shaped issues (`http::issues`): typing an
//! input and running its checks ([`decode_input`], the step the RPC codec and the REST codec
//! share), the whole-JSON checks every input gets, dates, time zones, URLs, e-mail addresses,
//! epoch milliseconds, and serde helpers for nullable fields.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::http::error::ApiError;

pub use crate::http::issues::{IntoPath, Issue, Issues, PathSegment, item};
pub use domain::time::EpochMillis;

/// An input: typed by serde, then checked by [`Input::check`].
pub trait Input: DeserializeOwned + Send + 'static {
    /// Add an issue for every field that is well-typed but not acceptable.
    fn check(&self, _issues: &mut Issues) {}
}

/// Type `json` as `T` and run its checks: what every input of the RPC procedures and the
/// REST endpoints goes through once its codec has unwrapped it.
pub fn decode_input<T: Input>(json: Value) -> Result<T, ApiError> {
    checked(typed(json)?)
}

/// Run `input`'s checks: `BAD_REQUEST` with every issue they find. For a REST body typed as
/// its own type ([`typed`]) and then made into the procedure's input, whose checks apply.
pub fn checked<T: Input>(input: T) -> Result<T, ApiError> {
    let mut issues = Issues::default();
    input.check(&mut issues);
    issues.into_result()?;
    Ok(input)
}

/// The whole-JSON checks ([`check_json`]), then serde: a typing error is one zod-shaped issue
/// at the field's path. No input checks (see [`decode_input`]).
pub fn typed<T: DeserializeOwned>(mut json: Value) -> Result<T, ApiError> {
    check_json(&mut json)?;
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

/// The checks every input gets before it is typed, over the whole JSON value:
/// - a NUL character (U+0000) in any string or key is refused, naming its path: Postgres
///   cannot store it in `text`, so it would otherwise surface as a 500 from whichever query
///   met it first;
/// - a number with an integral value (`3.0`, `1e2`) becomes an integer, as a JavaScript
///   client's zod sees it (`z.int()` accepts any safe integer, however it is written).
pub fn check_json(json: &mut serde_json::Value) -> Result<(), ApiError> {
    let mut issues = Issues::default();
    check_value(json, &mut Vec::new(), &mut issues);
    issues.into_result()
}

/// JavaScript's `Number.MAX_SAFE_INTEGER`: beyond it a float does not hold an exact integer.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;
/// Enough issues to fix a request; a huge array of NULs does not make a huge answer.
const MAX_NUL_ISSUES: usize = 20;

fn check_value(value: &mut serde_json::Value, path: &mut Vec<PathSegment>, issues: &mut Issues) {
    use serde_json::Value;
    match value {
        Value::String(text) => check_no_nul(text, path, issues),
        Value::Number(number) => {
            if let Some(float) = number.as_f64().filter(|_| number.is_f64())
                && float.fract() == 0.0
                && float.abs() <= MAX_SAFE_INTEGER
            {
                // Exact: |float| is an integer below 2^53.
                *value = Value::from(float as i64);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                path.push(PathSegment::Index(index));
                check_value(item, path, issues);
                path.pop();
            }
        }
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                path.push(PathSegment::Key(key.clone()));
                check_no_nul(key, path, issues);
                check_value(field, path, issues);
                path.pop();
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

fn check_no_nul(text: &str, path: &[PathSegment], issues: &mut Issues) {
    if text.contains('\0') && issues.len() < MAX_NUL_ISSUES {
        let mut issue = Issue::new(
            "invalid_format",
            path.to_vec(),
            "Invalid string: must not contain the NUL character (U+0000)",
        );
        issue.format = Some("no_nul");
        issues.push(issue);
    }
}

impl Issues {
    pub fn into_result(self) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.into_vec()))
        }
    }
}

/// A `YYYY-MM-DD` date, read once ([`DateInput`](domain::time::DateInput)): an issue at `path`
/// when it is not a calendar date.
pub fn check_date(
    issues: &mut Issues,
    path: impl IntoPath,
    date: &domain::time::DateInput,
) -> Option<chrono::NaiveDate> {
    let parsed = date.date();
    if parsed.is_none() {
        issues.format(path, "date", "Invalid date: expected YYYY-MM-DD");
    }
    parsed
}

/// An IANA time zone name such as `Europe/Berlin`.
pub fn parse_timezone(
    issues: &mut Issues,
    path: impl IntoPath,
    text: &str,
) -> Option<chrono_tz::Tz> {
    match text.parse::<chrono_tz::Tz>() {
        Ok(zone) => Some(zone),
        Err(_) => {
            issues.format(
                path,
                "timezone",
                "Invalid time zone: expected an IANA name such as Europe/Berlin",
            );
            None
        }
    }
}

/// The longest name (of a user, a team, an API key), trimmed, in characters.
pub const NAME_MAX_CHARS: usize = 100;

/// The longest URL [`check_http_url`] accepts, in bytes.
pub const URL_MAX_BYTES: usize = 2048;
/// The longest email address [`check_email`] accepts, in bytes.
pub const EMAIL_MAX_BYTES: usize = 254;

/// An absolute http(s) URL of at most [`URL_MAX_BYTES`] bytes.
pub fn check_http_url(issues: &mut Issues, path: impl IntoPath, text: &str) {
    let valid = text.len() <= URL_MAX_BYTES
        && url::Url::parse(text)
            .map(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
            .unwrap_or(false);
    if !valid {
        issues.format(path, "url", "Invalid URL: expected an absolute http(s) URL");
    }
}

/// A plausible email address (the provider or the invitee's sign-in proves it).
pub fn check_email(issues: &mut Issues, path: impl IntoPath, text: &str) {
    let valid = text.len() <= EMAIL_MAX_BYTES
        && text.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !text.chars().any(char::is_whitespace)
        });
    if !valid {
        issues.format(path, "email", "Invalid email address");
    }
}

/// For `Option<Option<T>>` fields with `#[serde(default)]`: absent → `None` (leave as is),
/// `null` → `Some(None)` (clear), a value → `Some(Some(v))` (set).
pub fn explicit_null<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// For optional fields that cannot be cleared (`Option<T>` with `#[serde(default)]`): absent →
/// `None` (leave as is), a value → `Some(v)`, and `null` is a type error naming the field,
/// as zod's `.optional()` answers it, rather than being read as "leave as is".
pub fn present_not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}
