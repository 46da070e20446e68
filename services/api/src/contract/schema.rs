//! The JSON Schema pieces the features' types use for the contract: trimmed and bounded text
//! ([`Text`]), string formats and time zones (epoch milliseconds: `domain::time::EpochMillis`).

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value};

/// An IANA time zone name the server knows (chrono-tz's database): `with = "Timezone"`.
pub struct Timezone;

impl JsonSchema for Timezone {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timezone".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let mut names: Vec<&str> = chrono_tz::TZ_VARIANTS
            .iter()
            .map(|zone| zone.name())
            .collect();
        names.sort_unstable();
        json_schema!({
            "type": "string",
            "format": "timezone",
            "enum": names,
        })
    }
}

/// A transform stating `x-text` (see the module documentation): the rules of a string the
/// server checks itself, e.g. `transform = Text::trimmed().min(1).max(NAME_MAX_CHARS)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Text {
    pub(crate) trim: bool,
    pub(crate) min: Option<usize>,
    pub(crate) max: Option<usize>,
    pub(crate) max_bytes: Option<usize>,
    pub(crate) format: Option<&'static str>,
    pub(crate) lowercase_one_of: Option<&'static [&'static str]>,
}

impl Text {
    /// Rules of the value as given.
    pub fn raw() -> Self {
        Self::default()
    }

    /// Rules of the value with leading and trailing white space removed (`str::trim`).
    pub fn trimmed() -> Self {
        Self {
            trim: true,
            ..Self::default()
        }
    }

    /// At least `min` characters.
    pub fn min(self, min: usize) -> Self {
        Self {
            min: Some(min),
            ..self
        }
    }

    /// At most `max` characters.
    pub fn max(self, max: usize) -> Self {
        Self {
            max: Some(max),
            ..self
        }
    }

    /// At most `max` bytes of UTF-8.
    pub fn max_bytes(self, max: usize) -> Self {
        Self {
            max_bytes: Some(max),
            ..self
        }
    }

    /// One of our formats (`email`, `http-url`).
    pub fn format(self, format: &'static str) -> Self {
        Self {
            format: Some(format),
            ..self
        }
    }

    /// ASCII-lowercased, one of `values`.
    pub fn lowercase_one_of(self, values: &'static [&'static str]) -> Self {
        Self {
            lowercase_one_of: Some(values),
            ..self
        }
    }

    fn rules(&self) -> Value {
        let mut text = Map::new();
        text.insert("trim".into(), Value::Bool(self.trim));
        let numbers = [
            ("minLength", self.min),
            ("maxLength", self.max),
            ("maxBytes", self.max_bytes),
        ];
        for (key, value) in numbers {
            if let Some(value) = value {
                text.insert(key.into(), value.into());
            }
        }
        if let Some(format) = self.format {
            text.insert("format".into(), format.into());
        }
        if let Some(values) = self.lowercase_one_of {
            text.insert("lowercaseOneOf".into(), values.to_vec().into());
        }
        Value::Object(text)
    }
}

impl schemars::transform::Transform for Text {
    fn transform(&mut self, schema: &mut Schema) {
        insert_into_string(schema, "x-text", self.rules());
    }
}

/// A transform setting `format` on a string (or nullable string) schema.
pub fn format(name: &'static str) -> impl Fn(&mut Schema) {
    move |schema: &mut Schema| insert_into_string(schema, "format", name.into())
}

/// Put `key` on the schema that types the string: the schema itself, or for `Option<String>`
/// (`anyOf`/`type: [string, null]`) the string branch.
fn insert_into_string(schema: &mut Schema, key: &str, value: Value) {
    if let Some(branches) = schema.get_mut("anyOf").and_then(Value::as_array_mut) {
        for branch in branches {
            if branch.get("type").and_then(Value::as_str) == Some("string")
                && let Some(object) = branch.as_object_mut()
            {
                object.insert(key.to_owned(), value.clone());
            }
        }
        return;
    }
    schema.insert(key.to_owned(), value);
}
