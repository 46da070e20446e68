//! oRPC's RPC wire protocol (see `../shared/reference/orpc-wire.md`, Part A) as axum
//! extractors and a response type:
//!
//! - [`RpcRouter`]: the procedures, each a [`Kind::Mutation`] (POST only) or a
//!   [`Kind::Query`] (POST, or GET with `?data=`). Every other method answers 405
//!   `METHOD_NOT_SUPPORTED` before anything runs (no session lookup, no handler): oRPC's
//!   matcher would run a procedure on PUT or HEAD too, but the CSRF check of cookie sessions
//!   exempts the safe methods, so a mutation reachable by HEAD would be a CSRF hole.
//! - [`RpcInput<T>`]: the input of a mutation (the POST body).
//! - [`RpcQuery<T>`]: the input of a query: `?data=<{json,meta}>` on GET, or the POST body.
//! - [`Rpc<T>`]: a success, `200 {"json": <output>}`.
//!
//! Inputs arrive as `{"json": <input>, "meta": [[code, ...path], ...]}`. `meta` is applied
//! before the input is typed: a Date (code 1) becomes epoch milliseconds, so every timestamp
//! field accepts either a JS `Date` or a number, and outputs carry plain epoch milliseconds
//! (ARCHITECTURE §9) with no `meta`. Typing errors and the procedure's own checks become a
//! `400 BAD_REQUEST` with zod-shaped `data.issues` (code, path, message).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::handler::Handler;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Json, RequestExt, Router};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;
use crate::validation::{Issue, Issues, PathSegment, check_json};

/// How a procedure may be called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Reads only: POST, or GET with `?data=` (oRPC's `.route({ method: 'GET' })`).
    Query,
    /// Changes something: POST only.
    Mutation,
}

/// One procedure of the router, as clients name it (`users.delete`), with what the contract
/// says of it (`cargo xtask contract`, [`crate::contract`]): its input and output types and
/// its declared errors.
#[derive(Debug, Clone)]
pub struct Procedure {
    pub name: &'static str,
    pub kind: Kind,
    pub signature: Signature,
    /// The `defined: true` errors it may answer, besides the ones every procedure may.
    pub errors: Vec<DefinedError>,
}

impl PartialEq for Procedure {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.kind == other.kind
    }
}

impl Eq for Procedure {}

impl Procedure {
    /// Its URL path: `users.delete` → `/rpc/users/delete`.
    pub fn path(&self) -> String {
        format!("/rpc/{}", self.name.replace('.', "/"))
    }
}

/// The JSON Schemas of a procedure's input (`None`: it takes none) and output, taken from the
/// handler's types when it is registered, so the contract cannot name other types than the
/// ones the handler reads and answers.
#[derive(Clone, Copy)]
pub struct Signature {
    pub input: fn(&mut SchemaGenerator) -> Option<Schema>,
    pub output: fn(&mut SchemaGenerator) -> Schema,
    /// The Rust input type (for messages).
    pub input_type: &'static str,
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signature")
            .field("input", &self.input_type)
            .finish_non_exhaustive()
    }
}

impl Signature {
    fn of<I: InputSchema, O: JsonSchema>() -> Self {
        Self {
            input: I::input_schema,
            output: |generator| generator.subschema_for::<O>(),
            input_type: std::any::type_name::<I>(),
        }
    }
}

/// A declared (`defined: true`) error a procedure may answer: its code, HTTP status and the
/// schema of its `data`, if it has any (see [`crate::contract::errors`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefinedError {
    pub code: &'static str,
    pub status: u16,
    pub data: Option<DataSchema>,
}

/// The schema of a declared error's `data`.
#[derive(Clone, Copy)]
pub struct DataSchema(pub fn(&mut SchemaGenerator) -> Schema);

impl std::fmt::Debug for DataSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataSchema")
    }
}

impl PartialEq for DataSchema {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::fn_addr_eq(self.0, other.0)
    }
}

impl Eq for DataSchema {}

/// The schema of a procedure input: none for [`NoInput`], the type's own otherwise.
pub trait InputSchema {
    fn input_schema(generator: &mut SchemaGenerator) -> Option<Schema>;
}

impl<T: JsonSchema> InputSchema for T {
    fn input_schema(generator: &mut SchemaGenerator) -> Option<Schema> {
        Some(generator.subschema_for::<T>())
    }
}

impl InputSchema for NoInput {
    fn input_schema(_: &mut SchemaGenerator) -> Option<Schema> {
        None
    }
}

/// What a handler answers on success: [`Rpc<T>`] or [`RpcWithHeaders<T>`], whose `T` is the
/// procedure's output.
pub trait RpcOutput {
    type Output: JsonSchema;
}

impl<T: JsonSchema> RpcOutput for Rpc<T> {
    type Output = T;
}

impl<T: JsonSchema> RpcOutput for RpcWithHeaders<T> {
    type Output = T;
}

/// A mutation's handler: `(State, <auth extractor>, RpcInput<I>) -> Result<Rpc<O>, ApiError>`.
/// Its types make the procedure's [`Signature`]; a handler taking [`RpcQuery`] is not one (a
/// GET-able input on a POST-only procedure would be a mistake).
pub trait MutationHandler<M> {
    fn signature() -> Signature;
}

/// A query's handler: `(State, <auth extractor>, RpcQuery<I>) -> Result<Rpc<O>, ApiError>`.
pub trait QueryHandler<M> {
    fn signature() -> Signature;
}

impl<F, Fut, A, B, I, R> MutationHandler<(A, B, RpcInput<I>, R)> for F
where
    F: FnOnce(A, B, RpcInput<I>) -> Fut,
    Fut: std::future::Future<Output = Result<R, ApiError>>,
    I: InputSchema,
    R: RpcOutput,
{
    fn signature() -> Signature {
        Signature::of::<I, R::Output>()
    }
}

impl<F, Fut, A, B, I, R> QueryHandler<(A, B, RpcQuery<I>, R)> for F
where
    F: FnOnce(A, B, RpcQuery<I>) -> Fut,
    Fut: std::future::Future<Output = Result<R, ApiError>>,
    I: InputSchema,
    R: RpcOutput,
{
    fn signature() -> Signature {
        Signature::of::<I, R::Output>()
    }
}

/// The RPC procedures: their routes, and the list of them with their types (for the contract,
/// and for tests that must cover every procedure, such as the hostile-input property test).
#[derive(Default)]
pub struct RpcRouter {
    router: Router<AppState>,
    procedures: Vec<Procedure>,
}

impl RpcRouter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A GET-able query.
    pub fn query<H, T, M>(self, name: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState> + QueryHandler<M>,
        T: 'static,
    {
        let methods = axum::routing::post(handler.clone())
            .get(handler)
            // axum lets HEAD reach the GET handler; only GET and POST run a procedure.
            .head(method_not_supported);
        self.add(name, Kind::Query, H::signature(), methods)
    }

    /// A mutation: POST only.
    pub fn mutation<H, T, M>(self, name: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState> + MutationHandler<M>,
        T: 'static,
    {
        self.add(
            name,
            Kind::Mutation,
            H::signature(),
            axum::routing::post(handler),
        )
    }

    /// The declared errors of the procedure added last.
    pub fn errors(mut self, errors: &[DefinedError]) -> Self {
        if let Some(procedure) = self.procedures.last_mut() {
            procedure.errors.extend_from_slice(errors);
        }
        self
    }

    fn add(
        mut self,
        name: &'static str,
        kind: Kind,
        signature: Signature,
        methods: MethodRouter<AppState>,
    ) -> Self {
        let procedure = Procedure {
            name,
            kind,
            signature,
            errors: Vec::new(),
        };
        self.router = self
            .router
            .route(&procedure.path(), methods.fallback(method_not_supported));
        self.procedures.push(procedure);
        self
    }

    pub fn merge(mut self, other: Self) -> Self {
        self.router = self.router.merge(other.router);
        self.procedures.extend(other.procedures);
        self
    }

    pub fn procedures(&self) -> &[Procedure] {
        &self.procedures
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}

async fn method_not_supported() -> ApiError {
    ApiError::MethodNotSupported
}

/// A procedure's input: typed by serde, then checked by [`Input::check`].
pub trait Input: DeserializeOwned + Send + 'static {
    /// Add an issue for every field that is well-typed but not acceptable.
    fn check(&self, _issues: &mut Issues) {}
}

/// No input at all (`{}` body, or no body). Any `json` sent is ignored, as oRPC ignores input
/// for procedures without an input schema.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoInput;

impl<'de> serde::Deserialize<'de> for NoInput {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(NoInput)
    }
}

impl Input for NoInput {}

/// The input of a procedure that is called with POST (not GET-able).
#[derive(Debug)]
pub struct RpcInput<T>(pub T);

/// The input of a GET-able query procedure (GET with `?data=`, or POST).
#[derive(Debug)]
pub struct RpcQuery<T>(pub T);

/// Bodies over this size answer 413 (entries hold at most 100,000 characters).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

impl<S: Send + Sync, T: Input> FromRequest<S> for RpcInput<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        // The router lets only POST reach a mutation; this keeps it so if one is mis-declared.
        if request.method() != Method::POST {
            return Err(ApiError::MethodNotSupported);
        }
        let body = read_body(request).await?;
        decode(envelope_from_body(&body)?).map(RpcInput)
    }
}

impl<S: Send + Sync, T: Input> FromRequest<S> for RpcQuery<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let envelope = match *request.method() {
            Method::GET => envelope_from_query(request.uri().query())?,
            Method::POST => envelope_from_body(&read_body(request).await?)?,
            _ => return Err(ApiError::MethodNotSupported),
        };
        decode(envelope).map(RpcQuery)
    }
}

async fn read_body(request: Request) -> Result<Bytes, ApiError> {
    let limited = request.with_limited_body();
    axum::body::to_bytes(limited.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)
}

/// The `{json, meta}` envelope; `json: None` is oRPC's `undefined` input.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Envelope {
    #[serde(default)]
    json: Option<Value>,
    #[serde(default)]
    meta: Vec<Value>,
}

impl Envelope {
    /// Input given as plain JSON (non-RPC endpoints such as the dev login).
    pub fn of(json: Value) -> Self {
        Self {
            json: Some(json),
            meta: Vec::new(),
        }
    }
}

fn envelope_from_body(body: &[u8]) -> Result<Envelope, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Envelope::default());
    }
    let value: Value = serde_json::from_slice(body).map_err(|_| ApiError::Malformed)?;
    match value {
        // A body without the envelope is not malformed: its input is `undefined` (C09).
        Value::Object(mut fields) => Ok(Envelope {
            json: fields.remove("json"),
            meta: match fields.remove("meta") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(meta)) => meta,
                Some(_) => return Err(ApiError::Malformed),
            },
        }),
        _ => Ok(Envelope::default()),
    }
}

fn envelope_from_query(query: Option<&str>) -> Result<Envelope, ApiError> {
    // oRPC reads the last `data` parameter.
    let data = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(name, _)| name == "data")
        .map(|(_, value)| value.into_owned())
        .last();
    match data {
        None => Ok(Envelope::default()),
        Some(data) => envelope_from_body(data.as_bytes()),
    }
}

/// Apply `meta`, refuse what no field may hold (NUL characters), read integral floats as
/// integers, type the input, run its checks.
pub fn decode<T: Input>(envelope: Envelope) -> Result<T, ApiError> {
    let mut json = envelope.json.unwrap_or(Value::Null);
    for entry in &envelope.meta {
        apply_meta(&mut json, entry)?;
    }
    check_json(&mut json)?;
    let input: T = type_input(json)?;
    let mut issues = Issues::default();
    input.check(&mut issues);
    issues.into_result()?;
    Ok(input)
}

fn type_input<T: DeserializeOwned>(json: Value) -> Result<T, ApiError> {
    let received = describe(&json);
    serde_path_to_error::deserialize(json).map_err(|error| {
        let path: Vec<PathSegment> = error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(PathSegment::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(PathSegment::Index(*index)),
                serde_path_to_error::Segment::Enum { variant } => {
                    Some(PathSegment::Key(variant.clone()))
                }
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        ApiError::Validation(vec![Issue::from_serde(
            path,
            &error.into_inner().to_string(),
            received,
        )])
    })
}

/// What JS would call the type of the root value, for "received undefined" messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "undefined",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Apply one `[code, ...path]` entry. A path that does not exist is a malformed request
/// (C07); a code we do not know is ignored (C08).
fn apply_meta(json: &mut Value, entry: &Value) -> Result<(), ApiError> {
    let Some(items) = entry.as_array() else {
        return Err(ApiError::Malformed);
    };
    let Some(code) = items.first().and_then(Value::as_u64) else {
        return Err(ApiError::Malformed);
    };
    let mut target = json;
    for segment in &items[1..] {
        target = match segment {
            Value::String(key) => target.get_mut(key.as_str()),
            Value::Number(index) => index
                .as_u64()
                .and_then(|index| usize::try_from(index).ok())
                .and_then(|index| target.get_mut(index)),
            _ => None,
        }
        .ok_or(ApiError::Malformed)?;
    }
    match code {
        // Date: ISO string (or null for an invalid Date) -> epoch milliseconds.
        1 => {
            *target = match target.as_str() {
                Some(iso) => chrono::DateTime::parse_from_rfc3339(iso)
                    .map(|at| Value::from(at.timestamp_millis()))
                    .map_err(|_| ApiError::Malformed)?,
                None => Value::Null,
            };
        }
        // bigint: decimal string -> a number when it fits.
        0 => {
            if let Some(number) = target.as_str().and_then(|text| text.parse::<i64>().ok()) {
                *target = Value::from(number);
            }
        }
        // NaN and undefined arrive as null already; URL, RegExp, Set and Map as strings and
        // arrays, which is what our inputs would take anyway.
        _ => {}
    }
    Ok(())
}

/// A successful RPC response: `200 {"json": <output>}`.
#[derive(Debug)]
pub struct Rpc<T>(pub T);

#[derive(Serialize)]
struct OutputEnvelope<T> {
    json: T,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Probe {
        title: String,
        created_after: Option<i64>,
        #[allow(dead_code)]
        tags: Option<Vec<String>>,
    }
    impl Input for Probe {
        fn check(&self, issues: &mut Issues) {
            issues.string_length("title", &self.title, 1, 5);
        }
    }

    fn envelope(body: &str) -> Envelope {
        envelope_from_body(body.as_bytes()).unwrap()
    }

    #[test]
    fn date_meta_becomes_epoch_milliseconds() {
        let probe: Probe = decode(envelope(
            r#"{"json":{"title":"a","createdAfter":"2020-01-01T00:00:00.000Z"},"meta":[[1,"createdAfter"]]}"#,
        ))
        .unwrap();
        assert_eq!(probe.created_after, Some(1_577_836_800_000));
    }

    #[test]
    fn meta_pointing_nowhere_is_malformed_and_unknown_codes_are_ignored() {
        let missing = decode::<Probe>(envelope(r#"{"json":{"title":"a"},"meta":[[1,"b"]]}"#));
        assert!(matches!(missing, Err(ApiError::Malformed)));
        let unknown =
            decode::<Probe>(envelope(r#"{"json":{"title":"a"},"meta":[[99,"title"]]}"#)).unwrap();
        assert_eq!(unknown.title, "a");
    }

    #[test]
    fn a_body_without_the_envelope_is_undefined_input() {
        let Err(ApiError::Validation(issues)) = decode::<Probe>(envelope(r#"{"title":"x"}"#))
        else {
            panic!("expected a validation error");
        };
        assert_eq!(issues[0].code, "invalid_type");
        assert!(issues[0].path.is_empty());
        assert!(issues[0].message.contains("received undefined"));
    }

    #[test]
    fn type_errors_name_the_field_path_with_array_indexes() {
        let Err(ApiError::Validation(issues)) =
            decode::<Probe>(envelope(r#"{"json":{"title":"a","tags":["x",3]}}"#))
        else {
            panic!("expected a validation error");
        };
        assert_eq!(
            issues[0].path,
            vec![PathSegment::Key("tags".into()), PathSegment::Index(1)]
        );
        assert_eq!(issues[0].code, "invalid_type");
        assert_eq!(issues[0].expected.as_deref(), Some("string"));
    }

    #[test]
    fn checks_run_after_typing_and_report_zod_codes() {
        let Err(ApiError::Validation(issues)) =
            decode::<Probe>(envelope(r#"{"json":{"title":"toolong"}}"#))
        else {
            panic!("expected a validation error");
        };
        assert_eq!(issues[0].code, "too_big");
        assert_eq!(issues[0].maximum, Some(5));
    }

    #[test]
    fn unknown_fields_are_named() {
        let Err(ApiError::Validation(issues)) =
            decode::<Probe>(envelope(r#"{"json":{"title":"a","titel":"b"}}"#))
        else {
            panic!("expected a validation error");
        };
        assert_eq!(issues[0].code, "unrecognized_keys");
        assert_eq!(issues[0].keys, Some(vec!["titel".to_owned()]));
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Hostile {
        limit: Option<i64>,
        #[allow(dead_code)]
        small: Option<u8>,
        at: Option<crate::validation::EpochMillis>,
        #[allow(dead_code)]
        texts: Option<Vec<String>>,
    }
    impl Input for Hostile {}

    fn issues_of(body: &str) -> Vec<Issue> {
        match decode::<Hostile>(envelope(body)) {
            Err(ApiError::Validation(issues)) => issues,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_nul_anywhere_is_an_issue_at_its_path() {
        let issues = issues_of(r#"{"json":{"texts":["ok","a\u0000"],"x\u0000":1}}"#);
        let paths: Vec<_> = issues.iter().map(|issue| issue.path.clone()).collect();
        assert_eq!(
            paths,
            vec![
                vec![PathSegment::Key("texts".into()), PathSegment::Index(1)],
                vec![PathSegment::Key("x\0".into())],
            ]
        );
        assert!(issues.iter().all(|issue| issue.message.contains("NUL")));
        // Other control characters are text like any other.
        decode::<Hostile>(envelope(r#"{"json":{"texts":["\u0001\t\u001f"]}}"#)).unwrap();
    }

    #[test]
    fn integral_floats_are_integers_and_fractions_say_what_is_wrong() {
        for (body, limit) in [
            (r#"{"json":{"limit":3.0}}"#, 3),
            (r#"{"json":{"limit":1e2}}"#, 100),
            (r#"{"json":{"limit":-0.0}}"#, 0),
        ] {
            assert_eq!(
                decode::<Hostile>(envelope(body)).unwrap().limit,
                Some(limit)
            );
        }
        let issues = issues_of(r#"{"json":{"limit":3.5}}"#);
        assert_eq!(
            issues[0].message,
            "Invalid input: expected an integer, received 3.5"
        );
        assert_eq!(issues[0].expected.as_deref(), Some("int"));
        let issues = issues_of(r#"{"json":{"limit":1e300}}"#);
        assert!(
            issues[0].message.contains("expected an integer"),
            "{issues:?}"
        );
        let issues = issues_of(r#"{"json":{"small":256}}"#);
        assert_eq!((issues[0].code, issues[0].maximum), ("too_big", Some(255)));
        let issues = issues_of(r#"{"json":{"small":-1}}"#);
        assert_eq!((issues[0].code, issues[0].minimum), ("too_small", Some(0)));
    }

    #[test]
    fn timestamps_are_bounded_to_the_years_1970_to_9999() {
        for body in [
            r#"{"json":{"at":0}}"#,
            r#"{"json":{"at":253402300799999}}"#,
            r#"{"json":{"at":"1970-01-01T00:00:00.000Z"},"meta":[[1,"at"]]}"#,
        ] {
            assert!(
                decode::<Hostile>(envelope(body)).unwrap().at.is_some(),
                "{body}"
            );
        }
        for (body, code) in [
            (r#"{"json":{"at":8210266876799999}}"#, "too_big"),
            (r#"{"json":{"at":253402300800000}}"#, "too_big"),
            (r#"{"json":{"at":-210866803200001}}"#, "too_small"),
            (r#"{"json":{"at":-1}}"#, "too_small"),
            (
                r#"{"json":{"at":"1969-12-31T23:59:59.999Z"},"meta":[[1,"at"]]}"#,
                "too_small",
            ),
        ] {
            let issues = issues_of(body);
            assert_eq!(issues[0].code, code, "{body}: {issues:?}");
            assert_eq!(issues[0].path, vec![PathSegment::Key("at".into())]);
            assert!(
                issues[0].message.contains("epoch milliseconds"),
                "{issues:?}"
            );
        }
        // A JS Date's extended year (beyond RFC 3339) is not a date we read.
        assert!(matches!(
            decode::<Hostile>(envelope(
                r#"{"json":{"at":"+275760-09-13T00:00:00.000Z"},"meta":[[1,"at"]]}"#
            )),
            Err(ApiError::Malformed)
        ));
    }

    #[test]
    fn malformed_json_and_get_data() {
        assert!(matches!(
            envelope_from_body(b"{\"json\":"),
            Err(ApiError::Malformed)
        ));
        let from_query =
            envelope_from_query(Some("data=%7B%22json%22%3A%7B%22title%22%3A%22q%22%7D%7D"))
                .unwrap();
        let probe: Probe = decode(from_query).unwrap();
        assert_eq!(probe.title, "q");
        assert!(envelope_from_query(None).unwrap().json.is_none());
    }
}
