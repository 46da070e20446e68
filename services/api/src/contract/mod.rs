//! The oRPC contract of the user-app api (issue 21): every procedure of
//! `routers::user_app::rpc_router` with the JSON Schemas of its input and output (taken from the
//! handlers' Rust types when they are registered, see [`crate::http::rpc::MutationHandler`]) and
//! its declared errors. `cargo xtask contract` turns it into the TypeScript package
//! `clients/contract` (zod schemas and an `@orpc/contract` router, [`zod`]); a test fails when the
//! committed package drifted from it.
//!
//! The schemas state the server's validation rules, from the constants the checks
//! ([`crate::http::validation::Input::check`]) use: lengths in characters (Unicode scalar values, as JSON
//! Schema counts them), ranges, formats and enums. Rules JSON Schema has no keyword for are
//! stated with these extensions, which the zod generator implements:
//!
//! - `x-text`: `{trim, minLength, maxLength, maxBytes, format, lowercaseOneOf}`: the server's
//!   own checks of a string; with `trim`, they apply to the value with leading and trailing
//!   white space removed (Rust's `str::trim`); `lowercaseOneOf`: the (ASCII-)lowercased value
//!   is one of these;
//! - `format`: `uuid`, `date` (`YYYY-MM-DD`, a calendar date), `email` and `http-url` (the server's
//!   [`crate::http::validation::check_email`] and [`crate::http::validation::check_http_url`]),
//!   `epoch-millis` (an integer instant, or a JS `Date` through oRPC's `meta`).
//!
//! Every string an input holds is also refused with a NUL character (the server refuses it
//! in every input, [`crate::http::validation::check_json`]); the generator adds that to every input
//! string.

pub mod errors;
pub mod schema;
pub mod zod;

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

use crate::http::rpc::{Kind, Procedure};

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
    contract_of(&crate::routers::user_app::rpc_procedures())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_mounted_procedure_has_a_contract_with_unique_names() {
        let contract = contract();
        let mounted = crate::routers::user_app::rpc_procedures();
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
