//! Input validation issues in the shape zod 4 gives them (the original validated with zod, and
//! oRPC sends the issues as `data.issues`): every issue has `code`, `path` and `message`, plus
//! zod's detail fields where they apply (`origin`, `minimum`, `maximum`, `inclusive`,
//! `expected`, `format`, `keys`, `values`). Clients that show `message` at `path` keep working;
//! clients that switch on zod's codes find the same codes. The checks that produce them are in
//! `validation`; `ApiError::Validation` carries them.

use domain::time::{EPOCH_MILLIS_EXPECTED, EpochMillis};
use serde::Serialize;

/// One step of a path: an object key or an array index (a number on the wire, like zod).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

/// Anything that names a field: `"title"`, `"schedule.time"`, or explicit segments.
pub trait IntoPath {
    fn into_path(self) -> Vec<PathSegment>;
}

impl IntoPath for &str {
    fn into_path(self) -> Vec<PathSegment> {
        self.split('.')
            .filter(|key| !key.is_empty())
            .map(|key| PathSegment::Key(key.to_owned()))
            .collect()
    }
}

impl IntoPath for Vec<PathSegment> {
    fn into_path(self) -> Vec<PathSegment> {
        self
    }
}

/// `field[index]` as a path.
pub fn item(field: &str, index: usize) -> Vec<PathSegment> {
    let mut path = field.into_path();
    path.push(PathSegment::Index(index));
    path
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    pub code: &'static str,
    pub path: Vec<PathSegment>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inclusive: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

impl Issue {
    pub fn new(code: &'static str, path: impl IntoPath, message: impl Into<String>) -> Self {
        Self {
            code,
            path: path.into_path(),
            message: message.into(),
            expected: None,
            origin: None,
            minimum: None,
            maximum: None,
            inclusive: None,
            format: None,
            keys: None,
            values: None,
        }
    }

    /// Translate a serde error (from `serde_path_to_error`, so `path` is known) into zod's
    /// vocabulary. `root` is what the whole input was ("undefined" when it was missing).
    pub fn from_serde(mut path: Vec<PathSegment>, message: &str, root: &str) -> Self {
        if let Some(field) = quoted(message, "missing field `") {
            path.push(PathSegment::Key(field.to_owned()));
            return Self::new(
                "invalid_type",
                path,
                "Invalid input: expected a value, received undefined",
            );
        }
        if let Some(field) = quoted(message, "unknown field `") {
            // serde's path points at the unknown key; zod reports it on the object.
            if path.last() == Some(&PathSegment::Key(field.to_owned())) {
                path.pop();
            }
            let mut issue = Self::new(
                "unrecognized_keys",
                path,
                format!("Unrecognized key: \"{field}\""),
            );
            issue.keys = Some(vec![field.to_owned()]);
            return issue;
        }
        if let Some(variant) = quoted(message, "unknown variant `") {
            let allowed: Vec<String> = message
                .split_once("expected ")
                .map(|(_, rest)| {
                    rest.split('`')
                        .skip(1)
                        .step_by(2)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let mut issue = Self::new(
                "invalid_value",
                path,
                format!(
                    "Invalid option: expected one of {} (got \"{variant}\")",
                    allowed
                        .iter()
                        .map(|value| format!("\"{value}\""))
                        .collect::<Vec<_>>()
                        .join("|")
                ),
            );
            issue.values = Some(allowed);
            return issue;
        }
        if let Some(rest) = message.strip_prefix("invalid type: ") {
            let (got, wanted) = rest.split_once(", expected ").unwrap_or((rest, "a value"));
            if let Some(number) = quoted(got, "floating point `")
                && is_integer_type(wanted)
            {
                // zod's `z.int()`: "expected int, received number" would not say what was wrong.
                let mut issue = Self::new(
                    "invalid_type",
                    path,
                    format!("Invalid input: expected an integer, received {number}"),
                );
                issue.expected = Some("int".to_owned());
                return issue;
            }
            let expected = js_type(wanted);
            let received = if path.is_empty() && root == "undefined" {
                "undefined"
            } else {
                js_received(got)
            };
            let mut issue = Self::new(
                "invalid_type",
                path,
                format!("Invalid input: expected {expected}, received {received}"),
            );
            issue.expected = Some(expected.to_owned());
            return issue;
        }
        if message.starts_with("UUID parsing failed") || message.contains("invalid character") {
            let mut issue = Self::new("invalid_format", path, "Invalid UUID");
            issue.format = Some("uuid");
            return issue;
        }
        if let Some(rest) = message.strip_prefix("invalid value: ") {
            let (got, wanted) = rest.split_once(", expected ").unwrap_or((rest, "a value"));
            if let Some(number) = quoted(got, "integer `")
                && let Some((minimum, maximum)) = integer_range(wanted)
            {
                // An integer the field's type cannot hold (`1e30` for an i64, -1 for a u32, a
                // timestamp before 1970 or after 9999).
                let too_small =
                    number.starts_with('-') || number.parse::<i64>().is_ok_and(|n| n < minimum);
                let what = if wanted.trim() == EPOCH_MILLIS_EXPECTED {
                    "a timestamp in epoch milliseconds (1970-01-01 to 9999-12-31)"
                } else {
                    "number"
                };
                let mut issue = Self::new(
                    if too_small { "too_small" } else { "too_big" },
                    path,
                    if too_small {
                        format!("Too small: expected {what} to be >={minimum}, received {number}")
                    } else {
                        format!("Too big: expected {what} to be <={maximum}, received {number}")
                    },
                );
                issue.origin = Some("number");
                if too_small {
                    issue.minimum = Some(minimum);
                } else {
                    issue.maximum = Some(maximum);
                }
                issue.inclusive = Some(true);
                return issue;
            }
            let mut issue = Self::new(
                "invalid_type",
                path,
                format!("Invalid input: expected {wanted}, received {got}"),
            );
            issue.expected = Some(js_type(wanted).to_owned());
            return issue;
        }
        Self::new("custom", path, message.to_owned())
    }
}

/// Collects the issues of one input; empty means valid.
#[derive(Debug, Default)]
pub struct Issues(Vec<Issue>);

impl Issues {
    pub fn push(&mut self, issue: Issue) {
        self.0.push(issue);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// A string of `min..=max` characters (Unicode scalar values).
    pub fn string_length(&mut self, path: impl IntoPath, value: &str, min: usize, max: usize) {
        let length = value.chars().count();
        if length < min {
            let mut issue = Issue::new(
                "too_small",
                path,
                format!("Too small: expected string to have >={min} characters"),
            );
            issue.origin = Some("string");
            issue.minimum = Some(min as i64);
            issue.inclusive = Some(true);
            self.push(issue);
        } else if length > max {
            let mut issue = Issue::new(
                "too_big",
                path,
                format!("Too big: expected string to have <={max} characters"),
            );
            issue.origin = Some("string");
            issue.maximum = Some(max as i64);
            issue.inclusive = Some(true);
            self.push(issue);
        }
    }

    /// Text stored trimmed: at least `min` characters once trimmed (so not blank), at most
    /// `max` as sent. The OpenAPI document says the same with `minLength`, `maxLength` and a
    /// `pattern` of "some character `str::trim` keeps" (Rust's `White_Space` set spelled out,
    /// since a regex engine's `\s` differs from it), which a client can check without
    /// knowing how we trim.
    pub fn trimmed_string_length(
        &mut self,
        path: impl IntoPath,
        value: &str,
        min: usize,
        max: usize,
    ) {
        let trimmed = value.trim();
        if trimmed.chars().count() < min {
            self.string_length(path, trimmed, min, max);
        } else {
            self.string_length(path, value, min, max);
        }
    }

    /// A number within `min..=max`.
    pub fn number_range(&mut self, path: impl IntoPath, value: i64, min: i64, max: i64) {
        if value < min {
            let mut issue = Issue::new(
                "too_small",
                path,
                format!("Too small: expected number to be >={min}"),
            );
            issue.origin = Some("number");
            issue.minimum = Some(min);
            issue.inclusive = Some(true);
            self.push(issue);
        } else if value > max {
            let mut issue = Issue::new(
                "too_big",
                path,
                format!("Too big: expected number to be <={max}"),
            );
            issue.origin = Some("number");
            issue.maximum = Some(max);
            issue.inclusive = Some(true);
            self.push(issue);
        }
    }

    /// An array of at most `max` items.
    pub fn array_length(&mut self, path: impl IntoPath, length: usize, max: usize) {
        if length > max {
            let mut issue = Issue::new(
                "too_big",
                path,
                format!("Too big: expected array to have <={max} items"),
            );
            issue.origin = Some("array");
            issue.maximum = Some(max as i64);
            issue.inclusive = Some(true);
            self.push(issue);
        }
    }

    /// A string that must match a format (`date`, `email`, `url`, ...).
    pub fn format(&mut self, path: impl IntoPath, format: &'static str, message: &str) {
        let mut issue = Issue::new("invalid_format", path, message);
        issue.format = Some(format);
        self.push(issue);
    }

    /// Any other rule.
    pub fn custom(&mut self, path: impl IntoPath, message: impl Into<String>) {
        self.push(Issue::new("custom", path, message));
    }

    /// The issues, for the error that carries them.
    pub(crate) fn into_vec(self) -> Vec<Issue> {
        self.0
    }
}

fn quoted<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.split('`').next()
}

/// serde's name of an integer type (`i64`, `u32`, ...).
fn is_integer_type(expected: &str) -> bool {
    integer_range(expected).is_some()
}

/// The range of an integer type serde names, clamped to JavaScript's safe integers.
fn integer_range(expected: &str) -> Option<(i64, i64)> {
    const SAFE: i64 = 9_007_199_254_740_991;
    Some(match expected.trim() {
        EPOCH_MILLIS_EXPECTED => (EpochMillis::MIN, EpochMillis::MAX),
        "i8" => (i8::MIN.into(), i8::MAX.into()),
        "i16" => (i16::MIN.into(), i16::MAX.into()),
        "i32" => (i32::MIN.into(), i32::MAX.into()),
        "i64" | "i128" | "isize" => (-SAFE, SAFE),
        "u8" => (0, u8::MAX.into()),
        "u16" => (0, u16::MAX.into()),
        "u32" => (0, u32::MAX.into()),
        "u64" | "u128" | "usize" => (0, SAFE),
        _ => return None,
    })
}

/// serde's "expected ..." phrase as a JS type name.
fn js_type(expected: &str) -> &'static str {
    let expected = expected.trim();
    if expected.contains("string") || expected.contains("UUID") || expected.contains("char") {
        "string"
    } else if expected.contains("sequence") || expected.contains("array") {
        "array"
    } else if expected.contains("bool") {
        "boolean"
    } else if expected.starts_with('i')
        || expected.starts_with('u')
        || expected.starts_with('f')
        || expected.contains("integer")
        || expected.contains("number")
    {
        "number"
    } else {
        "object"
    }
}

/// serde's "invalid type: ..." phrase as a JS type name.
fn js_received(got: &str) -> &'static str {
    if got.starts_with("string") || got.starts_with("char") {
        "string"
    } else if got.starts_with("integer") || got.starts_with("floating") {
        "number"
    } else if got.starts_with("boolean") {
        "boolean"
    } else if got.starts_with("sequence") {
        "array"
    } else if got.starts_with("null") || got.starts_with("unit") {
        "null"
    } else {
        "object"
    }
}
