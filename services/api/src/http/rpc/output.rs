//! The output side of the wire protocol: `{json, meta}` bodies.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A successful RPC response: `200 {"json": <output>}`.
#[derive(Debug)]
pub struct Rpc<T>(pub T);

#[derive(Serialize)]
pub(crate) struct OutputEnvelope<T> {
    pub(crate) json: T,
}

impl<T: Serialize> IntoResponse for Rpc<T> {
    fn into_response(self) -> Response {
        Json(OutputEnvelope { json: self.0 }).into_response()
    }
}

/// A successful RPC response with extra headers (a cleared session cookie): `200 {"json":
/// <output>}`.
#[derive(Debug)]
pub struct RpcWithHeaders<T>(pub Vec<(axum::http::HeaderName, String)>, pub T);

impl<T> RpcWithHeaders<T> {
    /// The output without extra headers.
    pub fn plain(output: T) -> Self {
        Self(Vec::new(), output)
    }
}

impl<T: Serialize> IntoResponse for RpcWithHeaders<T> {
    fn into_response(self) -> Response {
        (axum::response::AppendHeaders(self.0), Rpc(self.1)).into_response()
    }
}

/// An output of `undefined`, sent as `{}` like oRPC.
#[derive(Debug)]
pub struct RpcDone;

impl IntoResponse for RpcDone {
    fn into_response(self) -> Response {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response()
    }
}
