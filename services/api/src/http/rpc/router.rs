//! The procedures' router: every procedure declared a query (GET-able) or a mutation (POST
//! only), with its input and output schemas and its defined errors (for the contract).

use axum::Router;
use axum::handler::Handler;
use axum::routing::MethodRouter;
use schemars::{JsonSchema, Schema, SchemaGenerator};

use crate::http::error::ApiError;
use crate::state::AppState;

use super::input::{NoInput, RpcInput, RpcQuery};
use super::output::{Rpc, RpcWithHeaders};

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

/// What a handler answers on success: [`Rpc<T>`] or [`RpcWithHeaders<T>`], whose `T` is the
/// procedure's output.
pub trait RpcOutput {
    type Output: JsonSchema;
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

/// The RPC procedures: their routes, and the list of them with their types (for the contract,
/// and for tests that must cover every procedure, such as the hostile-input property test).
#[derive(Default)]
pub struct RpcRouter {
    pub(crate) router: Router<AppState>,
    pub(crate) procedures: Vec<Procedure>,
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

impl<T: JsonSchema> InputSchema for T {
    fn input_schema(generator: &mut SchemaGenerator) -> Option<Schema> {
        Some(generator.subschema_for::<T>())
    }
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

impl InputSchema for NoInput {
    fn input_schema(_: &mut SchemaGenerator) -> Option<Schema> {
        None
    }
}

impl<T: JsonSchema> RpcOutput for Rpc<T> {
    type Output = T;
}

impl<T: JsonSchema> RpcOutput for RpcWithHeaders<T> {
    type Output = T;
}
