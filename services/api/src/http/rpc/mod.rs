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

pub mod input;
pub mod output;
pub mod router;

pub use self::input::{Envelope, MAX_BODY_BYTES, NoInput, RpcInput, RpcQuery, decode};
pub use self::output::{Rpc, RpcDone, RpcWithHeaders};
pub use self::router::{
    DataSchema, DefinedError, InputSchema, Kind, MutationHandler, Procedure, QueryHandler,
    RpcOutput, RpcRouter, Signature,
};

#[cfg(test)]
mod tests;
