//! One JSON Schema to one zod expression.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// What the generator refuses: a schema construct it has no zod for.
#[derive(Debug, thiserror::Error)]
#[error("{at}: {message}")]
pub struct GenerateError {
    pub at: String,
    pub message: String,
}

/// Whether a schema is read by the server (an input: strict, with every check) or written by
/// it (an output: types only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Input,
    Output,
}

pub(crate) fn reference(schema: &Value) -> Option<&str> {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|path| path.strip_prefix("#/$defs/"))
}

pub(crate) struct Gen<'a> {
    pub(crate) mode: Mode,
    pub(crate) at: &'a str,
}

impl<'a> Gen<'a> {
    pub(crate) fn new(mode: Mode, at: &'a str) -> Self {
        Self { mode, at }
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, GenerateError> {
        Err(GenerateError {
            at: self.at.to_owned(),
            message: message.into(),
        })
    }

    pub(crate) fn zod(&self, schema: &Value) -> Result<String, GenerateError> {
        let object = match schema {
            Value::Bool(true) => return Ok("z.unknown()".into()),
            Value::Bool(false) => return Ok("z.never()".into()),
            Value::Object(object) => object,
            other => return self.fail(format!("not a schema: {other}")),
        };
        if let Some(name) = reference(schema) {
            return Ok(name.to_owned());
        }
        if let Some(value) = object.get("const") {
            return Ok(format!("z.literal({value})"));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(branches) = object.get(key).and_then(Value::as_array) {
                return self.union(branches);
            }
        }
        if let Some(all) = object.get("allOf").and_then(Value::as_array)
            && let [only] = all.as_slice()
        {
            return self.zod(only);
        }
        if let Some(values) = object.get("enum").and_then(Value::as_array) {
            return self.enumeration(values);
        }
        match object.get("type") {
            Some(Value::String(kind)) => self.typed(kind, object),
            Some(Value::Array(kinds)) => {
                let kinds: Vec<&str> = kinds.iter().filter_map(Value::as_str).collect();
                let nullable = kinds.contains(&"null");
                let rest: Vec<&str> = kinds.into_iter().filter(|kind| *kind != "null").collect();
                let zod = match rest.as_slice() {
                    [] => "z.null()".to_owned(),
                    [kind] => self.typed(kind, object)?,
                    _ => return self.fail(format!("several types: {rest:?}")),
                };
                Ok(if nullable && !rest.is_empty() {
                    format!("{zod}.nullable()")
                } else {
                    zod
                })
            }
            None if object.is_empty()
                || object
                    .keys()
                    .all(|key| matches!(key.as_str(), "description" | "title" | "default")) =>
            {
                Ok("z.unknown()".into())
            }
            _ => self.fail(format!("unsupported schema {schema}")),
        }
    }

    fn union(&self, branches: &[Value]) -> Result<String, GenerateError> {
        let is_null = |branch: &Value| branch.get("type").and_then(Value::as_str) == Some("null");
        let nullable = branches.iter().any(is_null);
        let rest: Vec<&Value> = branches.iter().filter(|branch| !is_null(branch)).collect();
        // Unit variants with doc comments: `oneOf: [{const: "a"}, ...]`.
        let constants: Option<Vec<&Value>> = rest
            .iter()
            .map(|branch| {
                branch
                    .get("const")
                    .or_else(|| branch.get("enum").and_then(|e| e.as_array()?.first()))
            })
            .collect();
        let zod = match constants {
            Some(values) if values.iter().all(|value| value.is_string()) && values.len() > 1 => {
                self.enumeration(&values.into_iter().cloned().collect::<Vec<_>>())?
            }
            _ => {
                let zods = rest
                    .iter()
                    .map(|branch| self.zod(branch))
                    .collect::<Result<Vec<_>, _>>()?;
                match zods.as_slice() {
                    [] => "z.null()".to_owned(),
                    [only] => only.clone(),
                    _ => format!("z.union([{}])", zods.join(", ")),
                }
            }
        };
        Ok(if nullable && !rest.is_empty() {
            format!("{zod}.nullable()")
        } else {
            zod
        })
    }

    fn enumeration(&self, values: &[Value]) -> Result<String, GenerateError> {
        let nullable = values.iter().any(Value::is_null);
        let strings: Vec<&Value> = values.iter().filter(|value| !value.is_null()).collect();
        if !strings.iter().all(|value| value.is_string()) {
            return self.fail("an enum of other values than strings");
        }
        let zod = format!(
            "z.enum([{}])",
            strings
                .iter()
                .map(|value| value.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(if nullable {
            format!("{zod}.nullable()")
        } else {
            zod
        })
    }

    fn typed(&self, kind: &str, object: &Map<String, Value>) -> Result<String, GenerateError> {
        match kind {
            "string" => Ok(self.string(object)),
            "integer" => Ok(self.integer(object)),
            "number" => Ok("z.number()".into()),
            "boolean" => Ok("z.boolean()".into()),
            "null" => Ok("z.null()".into()),
            "array" => self.array(object),
            "object" => self.object(object),
            other => self.fail(format!("type {other}")),
        }
    }

    fn string(&self, object: &Map<String, Value>) -> String {
        if self.mode == Mode::Output {
            return "z.string()".into();
        }
        let mut rules = Vec::new();
        for key in ["minLength", "maxLength", "pattern", "format"] {
            if let Some(value) = object.get(key) {
                rules.push(format!("{key}: {value}"));
            }
        }
        if let Some(Value::Object(text)) = object.get("x-text") {
            let fields: Vec<String> = text
                .iter()
                .map(|(key, value)| format!("{key}: {value}"))
                .collect();
            rules.push(format!("checked: {{ {} }}", fields.join(", ")));
        }
        format!("rules.text({{ {} }})", rules.join(", "))
    }

    fn integer(&self, object: &Map<String, Value>) -> String {
        if self.mode == Mode::Output {
            return "z.number()".into();
        }
        let bound = |key: &str| {
            object
                .get(key)
                .and_then(Value::as_i64)
                .filter(|value| value.unsigned_abs() <= MAX_SAFE_INTEGER)
        };
        if object.get("format").and_then(Value::as_str) == Some("epoch-millis") {
            return format!(
                "rules.instant({{ minimum: {}, maximum: {} }})",
                bound("minimum").unwrap_or(0),
                bound("maximum").unwrap_or(MAX_SAFE_INTEGER as i64)
            );
        }
        let mut zod = "z.int()".to_owned();
        if let Some(minimum) = bound("minimum") {
            let _ = write!(zod, ".min({minimum})");
        }
        if let Some(maximum) = bound("maximum") {
            let _ = write!(zod, ".max({maximum})");
        }
        zod
    }

    fn array(&self, object: &Map<String, Value>) -> Result<String, GenerateError> {
        let items = match object.get("items") {
            Some(items) => self.zod(items)?,
            None => "z.unknown()".into(),
        };
        let mut zod = format!("z.array({items})");
        if self.mode == Mode::Input {
            if let Some(min) = object.get("minItems") {
                let _ = write!(zod, ".min({min})");
            }
            if let Some(max) = object.get("maxItems") {
                let _ = write!(zod, ".max({max})");
            }
            if object.get("uniqueItems") == Some(&Value::Bool(true)) {
                zod.push_str(".refine(rules.distinct, { message: 'Duplicate items' })");
            }
        }
        Ok(zod)
    }

    fn object(&self, object: &Map<String, Value>) -> Result<String, GenerateError> {
        let empty = Map::new();
        let properties = object
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let required: BTreeSet<&str> = object
            .get("required")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match object.get("additionalProperties") {
            Some(Value::Object(_)) | Some(Value::Bool(true)) if properties.is_empty() => {
                let values = self.zod(&object["additionalProperties"])?;
                return Ok(format!("z.record(z.string(), {values})"));
            }
            None if properties.is_empty() => {
                return Ok("z.record(z.string(), z.unknown())".into());
            }
            _ => {}
        }
        let strict = self.mode == Mode::Input
            && object.get("additionalProperties") == Some(&Value::Bool(false));
        let mut fields = Vec::new();
        for (name, schema) in properties {
            let mut zod = self.zod(schema)?;
            if !required.contains(name.as_str()) {
                zod.push_str(".optional()");
            }
            let key = if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                name.clone()
            } else {
                Value::String(name.clone()).to_string()
            };
            fields.push(format!("  {key}: {},", zod.replace('\n', "\n  ")));
        }
        Ok(format!(
            "z.{}({{\n{}\n}})",
            if strict { "strictObject" } else { "object" },
            fields.join("\n")
        ))
    }
}

/// JavaScript's `Number.MAX_SAFE_INTEGER`.
pub(crate) const MAX_SAFE_INTEGER: u64 = 9_007_199_254_740_991;
