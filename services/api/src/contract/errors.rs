//! The declared (`defined: true`) errors of the procedures, as the contract lists them with
//! `.errors({...})`: each code once, with its status and the schema of its `data`. The
//! procedures name theirs at registration (`RpcRouter::errors`); a test checks that every
//! code the api's modules answer is declared here.
//!
//! Every procedure may also answer the undeclared errors (`defined: false`): `BAD_REQUEST`
//! (with `data.issues`), `UNAUTHORIZED`, `FORBIDDEN`, `NOT_FOUND`, `TOO_MANY_REQUESTS`,
//! `PAYLOAD_TOO_LARGE`, `SERVICE_UNAVAILABLE`, `INTERNAL_SERVER_ERROR`.

use schemars::SchemaGenerator;

use crate::http::error::ErrorData;
use crate::http::rpc::{DataSchema, DefinedError};

const fn declared(code: &'static str, status: u16) -> DefinedError {
    DefinedError {
        code,
        status,
        data: None,
    }
}

fn edit_conflict_data(generator: &mut SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<ErrorData>()
}

/// 409: the row changed since the client read it; `data` holds its current version.
pub const EDIT_CONFLICT: DefinedError = DefinedError {
    code: "EDIT_CONFLICT",
    status: 409,
    data: Some(DataSchema(edit_conflict_data)),
};
/// 403: the procedure needs a session signed in recently (sign in again).
pub const SESSION_NOT_FRESH: DefinedError = declared("SESSION_NOT_FRESH", 403);
pub const LAST_OWNER: DefinedError = declared("LAST_OWNER", 409);
pub const ALREADY_MEMBER: DefinedError = declared("ALREADY_MEMBER", 409);
pub const INVITATION_NOT_PENDING: DefinedError = declared("INVITATION_NOT_PENDING", 409);
pub const INVITATION_EXPIRED: DefinedError = declared("INVITATION_EXPIRED", 410);
pub const ENTRY_DELETED: DefinedError = declared("ENTRY_DELETED", 409);
pub const PROMPT_DELETED: DefinedError = declared("PROMPT_DELETED", 409);
pub const API_NOT_ENABLED: DefinedError = declared("API_NOT_ENABLED", 409);
pub const API_KEY_LIMIT: DefinedError = declared("API_KEY_LIMIT", 409);
pub const STORAGE_UNAVAILABLE: DefinedError = declared("STORAGE_UNAVAILABLE", 503);
pub const TOO_MANY_PENDING_UPLOADS: DefinedError = declared("TOO_MANY_PENDING_UPLOADS", 429);
pub const UPLOAD_EXPIRED: DefinedError = declared("UPLOAD_EXPIRED", 409);
pub const UPLOAD_NOT_FOUND: DefinedError = declared("UPLOAD_NOT_FOUND", 409);
pub const ATTACHMENT_DELETED: DefinedError = declared("ATTACHMENT_DELETED", 409);
pub const ATTACHMENT_NOT_READY: DefinedError = declared("ATTACHMENT_NOT_READY", 409);
pub const NO_THUMBNAIL: DefinedError = declared("NO_THUMBNAIL", 409);

/// Every declared error of an RPC procedure.
pub const ALL: &[DefinedError] = &[
    EDIT_CONFLICT,
    SESSION_NOT_FRESH,
    LAST_OWNER,
    ALREADY_MEMBER,
    INVITATION_NOT_PENDING,
    INVITATION_EXPIRED,
    ENTRY_DELETED,
    PROMPT_DELETED,
    API_NOT_ENABLED,
    API_KEY_LIMIT,
    STORAGE_UNAVAILABLE,
    TOO_MANY_PENDING_UPLOADS,
    UPLOAD_EXPIRED,
    UPLOAD_NOT_FOUND,
    ATTACHMENT_DELETED,
    ATTACHMENT_NOT_READY,
    NO_THUMBNAIL,
];

/// Declared codes answered outside the RPC procedures (the open API, the cron hooks, the
/// sign-in endpoints).
pub const NOT_RPC: &[&str] = &[
    "API_ACCESS_DISABLED",
    "USAGE_EXCEEDED",
    "INVALID_API_KEY",
    "IP_NOT_ALLOWED",
    "CRON_HOOKS_DISABLED",
    "JOB_NOT_FOUND",
    "JOB_RUNNING",
    "CONFLICT",
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    /// Every `"CODE"` the api's sources answer as a declared error is in [`ALL`] (and some
    /// procedure declares it) or in [`NOT_RPC`].
    #[test]
    fn every_declared_code_in_the_sources_is_catalogued() {
        let procedures = crate::routers::user_app::rpc_procedures();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src.clone()];
        let mut found = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") || path.ends_with("errors.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (at, _) in text
                .match_indices("ApiError::defined(")
                .chain(text.match_indices("ApiError::Defined {"))
            {
                let after = &text[at..text.len().min(at + 200)];
                // Only a literal code (`"EDIT_CONFLICT"`), not a mention in a comment.
                let Some(code) = after.split('"').nth(1).filter(|code| {
                    !code.is_empty() && code.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                }) else {
                    continue;
                };
                found.push((code.to_owned(), path.display().to_string()));
            }
        }
        assert!(found.len() > 15, "{found:?}");
        for (code, file) in found {
            if NOT_RPC.contains(&code.as_str()) {
                continue;
            }
            assert!(
                ALL.iter().any(|error| error.code == code),
                "{code} ({file}) is not in contract::errors::ALL"
            );
            assert!(
                procedures
                    .iter()
                    .any(|procedure| procedure.errors.iter().any(|error| error.code == code)),
                "no procedure declares {code} ({file})"
            );
        }
    }
}
