//! oRPC's RPC envelope (see `../shared/reference/orpc-wire.md`): inputs arrive as
//! `{"json": <input>, "meta": [...]}`, outputs leave as `{"json": <output>}`. Wire timestamps
//! are epoch milliseconds, so no `meta` entries are needed for our outputs.

use axum::Json;
use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Issue};

#[derive(serde::Deserialize)]
struct InputEnvelope {
    json: Option<serde_json::Value>,
}

/// Parse an RPC request body into `T`. Malformed JSON is `BAD_REQUEST` "Malformed request";
/// a body without the envelope means "no input", which then fails validation like oRPC.
pub fn parse_input<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let input = if body.is_empty() {
        serde_json::Value::Null
    } else {
        let envelope: InputEnvelope =
            serde_json::from_slice(body).map_err(|_| ApiError::Malformed)?;
        envelope.json.unwrap_or(serde_json::Value::Null)
    };
    if input.is_null() {
        return Err(ApiError::Validation(vec![Issue {
            path: vec![],
            message: "Input is required".to_owned(),
        }]));
    }
    serde_json::from_value(input).map_err(|error| {
        // serde reports the field in its message (`missing field `title``, `invalid type ...`).
        let message = error.to_string();
        let path = message
            .split('`')
            .nth(1)
            .filter(|_| {
                message.starts_with("missing field") || message.starts_with("unknown field")
            })
            .map(|field| vec![field.to_owned()])
            .unwrap_or_default();
        ApiError::Validation(vec![Issue { path, message }])
    })
}

#[derive(Serialize)]
struct OutputEnvelope<T> {
    json: T,
}

/// A successful RPC response.
pub fn output<T: Serialize>(value: T) -> Response {
    Json(OutputEnvelope { json: value }).into_response()
}
