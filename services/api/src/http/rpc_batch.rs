//! oRPC's batch protocol, as its `BatchHandlerPlugin` serves it and `BatchLinkPlugin` sends it
//! (`../shared/reference/orpc-wire.md` A5, B18–B20): several calls in one HTTP request.
//!
//! - A batch is any request under `/rpc/` carrying `x-orpc-batch: streaming|buffered` (the
//!   client's default path is the first call's path plus `/__batch__`).
//! - Its items: `POST` with a JSON array body, or `GET` with `?batch=<JSON array>`; each item
//!   is `{url, body?, headers?, method?}`, `method` defaulting to the batch's.
//! - Each item runs through the same procedures as a single call (same extractors, session
//!   check, CSRF check, validation), concurrently, and answers `{index, status, headers?,
//!   body}` in completion order: one SSE `message` event per item (streaming), or one JSON
//!   array (buffered). The batch itself answers `207 Multi-Status`.
//!
//! What we refuse, and why:
//! - more than [`MAX_ITEMS`] items: `413 PAYLOAD_TOO_LARGE` (the client's own default
//!   `maxSize` is 10, so it never sends more), and bodies over [`MAX_BATCH_BODY_BYTES`];
//! - a non-`GET` item in a `GET` batch: `405` for that item, since a safe-method request is
//!   not CSRF-checked and must not carry a mutation;
//! - an item whose URL is not a procedure (`/rpc/...`): `404 NOT_FOUND` for that item, so a
//!   batch reaches nothing a single RPC call could not;
//! - item headers that speak for the connection (`cookie`, `origin`, `referer`,
//!   `sec-fetch-*`, `host`, `x-forwarded-*`, `forwarded`, `x-real-ip`) or frame the body are
//!   ignored: those of the batch request apply, so an item cannot pose as another origin or
//!   client address.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, SET_COOKIE, TRANSFER_ENCODING};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower::ServiceExt;

use crate::http::error::ApiError;
use crate::http::rpc::MAX_BODY_BYTES;

/// The header that marks a batch, and its mode.
pub const BATCH_HEADER: &str = "x-orpc-batch";
/// The most calls one batch may carry (oRPC's `BatchLinkPlugin` default `maxSize`).
pub const MAX_ITEMS: usize = 10;
/// A batch body may carry [`MAX_ITEMS`] bodies of a single call's limit, but not more than this.
pub const MAX_BATCH_BODY_BYTES: usize = 4 * MAX_BODY_BYTES;
/// The largest item response a batch relays (a full page of entries is far below it).
const MAX_ITEM_RESPONSE_BYTES: usize = 8 * MAX_BODY_BYTES;
/// What a buffered batch holds in memory before it answers, all items together: an item whose
/// response would pass it answers `413 PAYLOAD_TOO_LARGE` instead (call it alone, or stream
/// the batch, which holds one response at a time). Without it, ten items of the item limit
/// would hold 80 MiB per request.
pub const MAX_BUFFERED_RESPONSE_BYTES: usize = 16 * MAX_BODY_BYTES;
/// oRPC's event-iterator keep-alive: a comment while no item has finished.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// The procedures a batch item may reach: the RPC router with its state, without this layer
/// (so a batch cannot nest another).
#[derive(Clone)]
pub struct BatchDispatch {
    procedures: Router,
}

impl BatchDispatch {
    pub fn new(procedures: Router) -> Self {
        Self { procedures }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Streaming,
    Buffered,
}

/// One call of a batch, as the client sends it.
#[derive(Debug, Deserialize)]
struct BatchItem {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, HeaderField>,
    #[serde(default)]
    body: Option<Value>,
}

/// oRPC's `StandardHeaders` value: one string or several.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
enum HeaderField {
    One(String),
    Many(Vec<String>),
}

/// One call's answer, in the order calls finish.
#[derive(Debug, Serialize)]
struct BatchItemResponse {
    index: usize,
    status: u16,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, HeaderField>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Value>,
    /// The response body's size as the procedure wrote it (the buffered batch's budget).
    #[serde(skip)]
    body_bytes: usize,
}

/// Serve a batch when the request says it is one; pass anything else on untouched.
pub async fn middleware(
    State(dispatch): State<BatchDispatch>,
    request: Request,
    next: Next,
) -> Response {
    let Some(mode) = request.headers().get(BATCH_HEADER).cloned() else {
        return next.run(request).await;
    };
    match serve(dispatch, &mode, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn serve(
    dispatch: BatchDispatch,
    mode: &HeaderValue,
    request: Request,
) -> Result<Response, ApiError> {
    let mode = match mode.as_bytes() {
        b"streaming" => Mode::Streaming,
        b"buffered" => Mode::Buffered,
        _ => {
            return Err(ApiError::field(
                BATCH_HEADER,
                "invalid_value",
                "x-orpc-batch must be `streaming` or `buffered`",
            ));
        }
    };
    let (parts, body) = request.into_parts();
    let items: Vec<BatchItem> = match parts.method {
        Method::GET => items_from_query(parts.uri.query())?,
        Method::POST => {
            let body = axum::body::to_bytes(body, MAX_BATCH_BODY_BYTES)
                .await
                .map_err(|_| ApiError::PayloadTooLarge)?;
            serde_json::from_slice(&body).map_err(|_| ApiError::Malformed)?
        }
        _ => return Err(ApiError::MethodNotSupported),
    };
    if items.len() > MAX_ITEMS {
        return Err(ApiError::PayloadTooLarge);
    }
    let base_headers = shared_headers(&parts.headers);
    let calls: FuturesUnordered<_> = items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let call = item_request(&parts, &base_headers, item);
            let procedures = dispatch.procedures.clone();
            async move {
                let response = match call {
                    Ok(request) => match procedures.oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                    Err(error) => error.into_response(),
                };
                item_response(index, response).await
            }
        })
        .collect();
    Ok(match mode {
        Mode::Buffered => buffered(calls).await,
        Mode::Streaming => streaming(calls),
    })
}

fn items_from_query(query: Option<&str>) -> Result<Vec<BatchItem>, ApiError> {
    // oRPC reads the last `batch` parameter.
    let batch = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(name, _)| name == "batch")
        .map(|(_, value)| value.into_owned())
        .last()
        .ok_or(ApiError::Malformed)?;
    serde_json::from_str(&batch).map_err(|_| ApiError::Malformed)
}

/// Headers an item may not set: they describe the connection (who is calling, from where)
/// or the framing of the body, which the batch request alone decides.
fn is_connection_header(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "cookie"
            | "origin"
            | "referer"
            | "forwarded"
            | "x-real-ip"
            | "connection"
            | "content-length"
            | "content-type"
            | "transfer-encoding"
            | BATCH_HEADER
    ) || name.starts_with("sec-fetch-")
        || name.starts_with("x-forwarded-")
}

/// The batch request's headers every item starts from (oRPC sends headers common to every
/// call once, on the batch request).
fn shared_headers(headers: &HeaderMap) -> HeaderMap {
    let mut shared = headers.clone();
    for name in [
        CONTENT_LENGTH,
        CONTENT_TYPE,
        TRANSFER_ENCODING,
        HeaderName::from_static(BATCH_HEADER),
    ] {
        shared.remove(name);
    }
    shared
}

/// The single call an item stands for, or the error that item answers.
fn item_request(
    batch: &axum::http::request::Parts,
    base_headers: &HeaderMap,
    item: BatchItem,
) -> Result<Request, ApiError> {
    let method = match item.method.as_deref() {
        None => batch.method.clone(),
        Some(method) => {
            Method::from_bytes(method.as_bytes()).map_err(|_| ApiError::MethodNotSupported)?
        }
    };
    if batch.method == Method::GET && method != Method::GET {
        return Err(ApiError::MethodNotSupported);
    }
    let uri = procedure_uri(&item.url)?;
    let mut headers = base_headers.clone();
    for (name, value) in &item.headers {
        let name = name.to_ascii_lowercase();
        if is_connection_header(&name) {
            continue;
        }
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| ApiError::Malformed)?;
        headers.remove(&name);
        let values = match value {
            HeaderField::One(value) => std::slice::from_ref(value),
            HeaderField::Many(values) => values.as_slice(),
        };
        for value in values {
            let value = HeaderValue::from_str(value).map_err(|_| ApiError::Malformed)?;
            headers.append(name.clone(), value);
        }
    }
    let body = match item.body {
        None => Body::empty(),
        Some(body) => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Body::from(serde_json::to_vec(&body).map_err(|_| ApiError::Malformed)?)
        }
    };
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    // The connection's address and what the outer layers attached (request id, ...).
    *request.extensions_mut() = batch.extensions.clone();
    Ok(request)
}

/// The path and query of an item's URL, when it names a procedure under `/rpc/`.
fn procedure_uri(url: &str) -> Result<Uri, ApiError> {
    // Absolute (what the client sends) or relative to any origin: only the path counts.
    let base = url::Url::parse("http://batch.invalid").map_err(ApiError::internal)?;
    let parsed = base.join(url).map_err(|_| ApiError::Malformed)?;
    if !parsed.path().starts_with("/rpc/") {
        return Err(ApiError::ProcedureNotFound);
    }
    let path_and_query = match parsed.query() {
        Some(query) => format!("{}?{query}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    path_and_query
        .parse::<Uri>()
        .map_err(|_| ApiError::Malformed)
}

async fn item_response(index: usize, response: Response) -> BatchItemResponse {
    let (parts, body) = response.into_parts();
    let is_stream = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
    if is_stream {
        // oRPC answers 500 with a string for an item whose output is a stream.
        return BatchItemResponse {
            index,
            status: StatusCode::INTERNAL_SERVER_ERROR.as_u16(),
            headers: BTreeMap::new(),
            body: Some(Value::from(
                "A streamed output cannot be part of a batch; call it alone",
            )),
            body_bytes: 0,
        };
    }
    let bytes = match axum::body::to_bytes(body, MAX_ITEM_RESPONSE_BYTES).await {
        Ok(bytes) => bytes,
        Err(error) => {
            let error = error.into_inner();
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return too_large(
                    index,
                    format!(
                        "This response passes the {} MiB a batch item may carry: call this procedure alone",
                        MAX_ITEM_RESPONSE_BYTES / (1024 * 1024)
                    ),
                );
            }
            tracing::warn!(%error, index, "a batch item's response could not be read");
            return BatchItemResponse {
                index,
                status: StatusCode::INTERNAL_SERVER_ERROR.as_u16(),
                headers: BTreeMap::new(),
                body: Some(Value::from("The response could not be read")),
                body_bytes: 0,
            };
        }
    };
    let (body, body_bytes) = (item_body(&bytes), bytes.len());
    BatchItemResponse {
        index,
        status: parts.status.as_u16(),
        headers: item_headers(&parts.headers),
        body,
        body_bytes,
    }
}

/// A JSON body as JSON; an empty one is oRPC's `undefined`; anything else a string.
fn item_body(bytes: &Bytes) -> Option<Value> {
    if bytes.is_empty() {
        return None;
    }
    Some(
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(bytes).into_owned())),
    )
}

/// The headers a procedure set (`set-cookie`, `retry-after`, ...), without the framing ones.
fn item_headers(headers: &HeaderMap) -> BTreeMap<String, HeaderField> {
    let mut fields: BTreeMap<String, HeaderField> = BTreeMap::new();
    for (name, value) in headers {
        if [CONTENT_TYPE, CONTENT_LENGTH, TRANSFER_ENCODING].contains(name) {
            continue;
        }
        let Ok(value) = value.to_str() else { continue };
        let value = value.to_owned();
        match fields.remove(name.as_str()) {
            None => fields.insert(name.as_str().to_owned(), HeaderField::One(value)),
            Some(HeaderField::One(first)) => fields.insert(
                name.as_str().to_owned(),
                HeaderField::Many(vec![first, value]),
            ),
            Some(HeaderField::Many(mut values)) => {
                values.push(value);
                fields.insert(name.as_str().to_owned(), HeaderField::Many(values))
            }
        };
    }
    fields
}

/// One JSON array, in completion order. Cookies the calls set are also set on the batch
/// response, so a browser keeps them (the client alone cannot set a cookie from a body).
async fn buffered(mut calls: impl Stream<Item = BatchItemResponse> + Unpin) -> Response {
    let mut items = Vec::new();
    let mut held = 0usize;
    while let Some(item) = calls.next().await {
        if held + item.body_bytes > MAX_BUFFERED_RESPONSE_BYTES {
            items.push(too_large(
                item.index,
                format!(
                    "The batch's responses pass {} MiB together: call this procedure alone, or send the batch in streaming mode",
                    MAX_BUFFERED_RESPONSE_BYTES / (1024 * 1024)
                ),
            ));
            continue;
        }
        held += item.body_bytes;
        items.push(item);
    }
    let mut response = (StatusCode::MULTI_STATUS, axum::Json(&items)).into_response();
    for item in &items {
        let cookies = match item.headers.get(SET_COOKIE.as_str()) {
            None => continue,
            Some(HeaderField::One(cookie)) => std::slice::from_ref(cookie),
            Some(HeaderField::Many(cookies)) => cookies.as_slice(),
        };
        for cookie in cookies {
            if let Ok(value) = HeaderValue::from_str(cookie) {
                response.headers_mut().append(SET_COOKIE, value);
            }
        }
    }
    response
}

/// `413 PAYLOAD_TOO_LARGE` for an item, in the error shape of a single call, with the reason.
fn too_large(index: usize, message: String) -> BatchItemResponse {
    BatchItemResponse {
        index,
        status: StatusCode::PAYLOAD_TOO_LARGE.as_u16(),
        headers: BTreeMap::new(),
        body: ApiError::PayloadTooLarge
            .envelope_with_message(message)
            .ok(),
        body_bytes: 0,
    }
}

/// An event stream: an opening comment, then one `message` event per call as it finishes,
/// keep-alive comments while none does; the stream ends after the last call.
fn streaming(calls: impl Stream<Item = BatchItemResponse> + Send + 'static) -> Response {
    let opening =
        futures::stream::once(async { Ok::<_, Infallible>(Event::default().comment("")) });
    let messages = calls.map(|item| {
        let event = Event::default().event("message");
        Ok::<_, Infallible>(match event.json_data(&item) {
            Ok(event) => event,
            // Serializing our own types cannot fail; if it ever did, the client gets the
            // item's index with a 500 rather than a missing answer.
            Err(_) => Event::default().event("message").data(format!(
                r#"{{"index":{},"status":500,"body":"The response could not be encoded"}}"#,
                item.index
            )),
        })
    });
    let stream = opening.chain(messages);
    (
        StatusCode::MULTI_STATUS,
        Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE_INTERVAL).text("")),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
