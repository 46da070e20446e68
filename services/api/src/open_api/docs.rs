//! The open API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the types' `ToSchema` derives (so it follows the code), served at
//! `GET /api/v1/openapi.json` (not metered: reading the contract costs no quota), and an
//! interactive reference at `GET /api/docs`. `tests/open_api_rest.rs` compares it to the
//! committed `tests/snapshots/openapi.json`, so every change to the contract is deliberate.

use axum::Json;
use axum::response::Html;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::rest;

/// The error body of every open API error.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // Documents `RestErrorBody`, which borrows its issues.
pub struct ErrorBody {
    /// Stable: `BAD_REQUEST`, `INVALID_API_KEY`, `IP_NOT_ALLOWED`, `API_ACCESS_DISABLED`,
    /// `FORBIDDEN`, `NOT_FOUND`, `PAYLOAD_TOO_LARGE`, `EDIT_CONFLICT`, `RATE_LIMITED`,
    /// `USAGE_EXCEEDED`, `INTERNAL_SERVER_ERROR`.
    code: String,
    message: String,
    /// On `BAD_REQUEST` validation errors: one per invalid field.
    issues: Option<Vec<ValidationIssue>>,
}

/// One invalid field (zod's issue shape).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ValidationIssue {
    /// e.g. `too_small`, `invalid_type`, `unrecognized_keys`.
    code: String,
    /// Object keys (strings) and array indexes (integers) to the field, e.g. `["tags", 1]`.
    path: Vec<IssuePathSegment>,
    message: String,
}

/// One step of an issue's path (the wire form of `validation::PathSegment`).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum IssuePathSegment {
    Key(String),
    Index(u64),
}

struct ApiKeySecurity;

impl Modify for ApiKeySecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                super::API_KEY_HEADER,
                "An API key of the API team (`jk_live_…`), created by a team admin in the app",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Journal open API",
        version = "1.0.0",
        description = "Team-scoped REST access for API teams. Every response to an authenticated request carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (epoch seconds). Timestamps are epoch milliseconds."
    ),
    paths(
        rest::create_entry,
        rest::list_entries,
        rest::get_entry,
        rest::update_entry,
        rest::delete_entry,
        rest::list_prompts,
        rest::create_prompt,
        rest::usage,
        rest::subscription,
        rest::usage_history,
    ),
    components(schemas(ErrorBody, ValidationIssue, IssuePathSegment)),
    modifiers(&ApiKeySecurity),
    security(("api_key" = []))
)]
pub struct OpenApiDoc;

/// The document as served and snapshot-tested.
pub fn document() -> utoipa::openapi::OpenApi {
    OpenApiDoc::openapi()
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

/// `GET /api/docs`: Scalar's reference page from its CDN, pointed at the document (no assets
/// in the binary, nothing downloaded at build time).
pub async fn reference_page() -> Html<&'static str> {
    Html(
        r#"<!doctype html>
<html>
  <head>
    <title>Journal open API</title>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
  </head>
  <body>
    <script id="api-reference" data-url="/api/v1/openapi.json"></script>
    <script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference"></script>
  </body>
</html>
"#,
    )
}
