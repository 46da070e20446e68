//! The oRPC contract of the user-app api (issue 21): every procedure of [`crate::rpc_router`]
//! with the JSON Schemas of its input and output (taken from the handlers' Rust types when
//! they are registered, see [`crate::rpc::MutationHandler`]) and its declared errors.
//! `cargo xtask contract` turns it into the TypeScript package `clients/contract` (zod
//! schemas and an `@orpc/contract` router, [`zod`]); a test fails when the committed package
//! drifted from it.
//!
//! The schemas state the server's validation rules, from the constants the checks
//! ([`crate::rpc::Input::check`]) use: lengths in characters (Unicode scalar values, as JSON
//! Schema counts them), ranges, formats and enums. Rules JSON Schema has no keyword for are
//! stated with these extensions, which the zod generator implements:
//!
//! - `x-text`: `{trim, minLength, maxLength, maxBytes, format, lowercaseOneOf}`: the server's
//!   own checks of a string; with `trim`, they apply to the value with leading and trailing
//!   white space removed (Rust's `str::trim`); `lowercaseOneOf`: the (ASCII-)lowercased value
//!   is one of these;
//! - `format`: `uuid`, `date` (`YYYY-MM-DD`, a calendar date), `email` and `http-url` (the
//!   server's [`crate::validation::check_email`] and [`crate::validation::check_http_url`]),
//!   `epoch-millis` (an integer instant, or a JS `Date` through oRPC's `meta`).
//!
//! Every string an input holds is also refused with a NUL character (the server refuses it
//! in every input, [`crate::validation::check_json`]); the generator adds that to every input
//! string.

pub mod errors;
pub mod zod;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value};

use crate::rpc::{Kind, Procedure};
use crate::validation::EpochMillis;

/// The contract: the procedures, and the named schemas their inputs and outputs refer to.
#[derive(Debug, Clone)]
pub struct Contract {
    pub procedures: Vec<ProcedureContract>,
    /// Named output schemas (entities), by name: `#/$defs/<name>`.
    pub definitions: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub struct ProcedureContract {
    pub name: &'static str,
    pub kind: Kind,
    /// `None`: the procedure takes no input.
    pub input: Option<Value>,
    pub output: Value,
    pub errors: Vec<ErrorContract>,
}

#[derive(Debug, Clone)]
pub struct ErrorContract {
    pub code: &'static str,
    pub status: u16,
    pub data: Option<Value>,
}

/// The contract of every procedure the api mounts under `/rpc`.
pub fn contract() -> Contract {
    contract_of(&crate::rpc_procedures())
}

/// The contract of `procedures`: inputs inlined (each is its procedure's own), outputs by
/// reference to named entities, as the server deserializes and serializes them.
pub fn contract_of(procedures: &[Procedure]) -> Contract {
    let mut inputs = SchemaSettings::draft2020_12()
        .for_deserialize()
        .with(|settings| settings.inline_subschemas = true)
        .into_generator();
    let mut outputs = SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator();
    let procedures = procedures
        .iter()
        .map(|procedure| ProcedureContract {
            name: procedure.name,
            kind: procedure.kind,
            input: (procedure.signature.input)(&mut inputs).map(Value::from),
            output: (procedure.signature.output)(&mut outputs).into(),
            errors: procedure
                .errors
                .iter()
                .map(|error| ErrorContract {
                    code: error.code,
                    status: error.status,
                    data: error.data.map(|data| (data.0)(&mut inputs).into()),
                })
                .collect(),
        })
        .collect();
    let definitions = outputs.take_definitions(true);
    Contract {
        procedures,
        definitions,
    }
}

/// The schema of one type as the server serializes it (for types outside the api's
/// procedures, such as the sync-streamer's frames), with its own named definitions.
pub fn output_schema<T: JsonSchema>() -> (Value, Map<String, Value>) {
    let mut generator = SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator();
    let schema = generator.subschema_for::<T>();
    (schema.into(), generator.take_definitions(true))
}

// ---------------------------------------------------------------------------------------------
// Schemas of types that are not derived.

impl JsonSchema for EpochMillis {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EpochMillis".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "format": "epoch-millis",
            "minimum": EpochMillis::MIN,
            "maximum": EpochMillis::MAX,
        })
    }
}

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
    trim: bool,
    min: Option<usize>,
    max: Option<usize>,
    max_bytes: Option<usize>,
    format: Option<&'static str>,
    lowercase_one_of: Option<&'static [&'static str]>,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_mounted_procedure_has_a_contract_with_unique_names() {
        let contract = contract();
        let mounted = crate::rpc_procedures();
        assert_eq!(contract.procedures.len(), mounted.len());
        let mut names: Vec<_> = contract.procedures.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            mounted.len(),
            "a procedure is registered twice"
        );
        for procedure in &contract.procedures {
            assert!(
                procedure.output.is_object() || procedure.output.is_boolean(),
                "{}",
                procedure.name
            );
        }
    }
}
