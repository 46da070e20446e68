//! The open API's REST operations, declared once: `rest_operations!` takes the list of
//! paths and their handlers and generates both the axum routes and the OpenAPI document's
//! `paths` (each handler's `#[utoipa::path]` documents it), so the two cannot drift apart.
//!
//! The endpoints act in the API team's team scope: journal entries are team entries of the
//! API team's app team, authored by the key's creator; prompts are the team's prompts. They
//! reuse the RPC procedures' functions (same rows, changesets and outbox events), only the
//! edge differs: plain JSON bodies, path ids, query parameters. Inputs are the RPC inputs,
//! typed and checked the same way (`400 BAD_REQUEST` with `issues[].path`); the team is never
//! taken from the client (`teamId` in a body is an unknown field), and a path id overrides
//! nothing (an id in the body is an unknown field).

use axum::Router;
use axum::routing::MethodRouter;
use utoipa::Modify;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};

use crate::http::rest::{ErrorBody, IssuePathSegment, ValidationIssue};
use crate::modules::journal_entries::rest as journal_entries;
use crate::modules::prompts::rest as prompts;
use crate::modules::subscriptions::rest as subscriptions;
use crate::procedures::api_key::API_KEY_HEADER;
use crate::state::AppState;

struct ApiKeySecurity;

impl Modify for ApiKeySecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                API_KEY_HEADER,
                "An API key of the API team (`jk_live_…`), created by a team admin in the app",
            ))),
        );
    }
}

/// `path => method(handler), …;` for every operation: generates [`OpenApiDoc`] (the document,
/// its paths in the order listed) and [`routes`] (the axum routes). The document's paths are
/// utoipa's (`{journalEntryId}`), the routes' axum's (`{journal_entry_id}`): both name the
/// same segment, which the handlers read by position.
macro_rules! rest_operations {
    ($($path:literal => $($method:ident($($handler:ident)::+)),+;)+) => {
        #[derive(utoipa::OpenApi)]
        #[openapi(
            info(
                title = "Journal open API",
                version = "1.0.0",
                description = "Team-scoped REST access for API teams. Every response to an authenticated request carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (epoch seconds). Timestamps are epoch milliseconds."
            ),
            paths($($($($handler)::+),+),+),
            components(schemas(ErrorBody, ValidationIssue, IssuePathSegment)),
            modifiers(&ApiKeySecurity),
            security(("api_key" = []))
        )]
        pub struct OpenApiDoc;

        /// The REST operations' routes (metered and logged by the caller's layers).
        pub fn routes() -> Router<AppState> {
            Router::new()$(.route($path, MethodRouter::new()$(.$method($($handler)::+))+))+
        }
    };
}

rest_operations! {
    "/api/v1/journal-entries" => post(journal_entries::create_entry), get(journal_entries::list_entries);
    "/api/v1/journal-entries/{journal_entry_id}" =>
        get(journal_entries::get_entry),
        patch(journal_entries::update_entry),
        delete(journal_entries::delete_entry);
    "/api/v1/prompts" => get(prompts::list_prompts), post(prompts::create_prompt);
    "/api/v1/usage" => get(subscriptions::usage);
    "/api/v1/subscription" => get(subscriptions::subscription);
    "/api/v1/usage/history" => get(subscriptions::usage_history);
}
