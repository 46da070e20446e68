//! Data exports: `exports.create|get|list`, the answer to the worker's `ExportDataRequest`,
//! and the `export.ready` event that marks an export ready.
//!
//! - `exports.create` records the request and sends the worker the task
//!   `exports.export_user_data` in one transaction. While an export of the caller requested
//!   within the last hour is still pending, it answers that one instead of starting another.
//! - The worker builds the archive from the api's answers to `ExportDataRequest` (NATS
//!   request/reply, `queries.api.export_data`): the api reads its own schema, one section and
//!   one page at a time, and the worker never touches the api's tables.
//! - The worker's `export.ready` event (also what the notifier e-mails) marks the export
//!   ready, with its size and presigned download link; `exports.get` shows the link until it
//!   expires (status `expired` afterwards: ask for a new export).
//!
//! What an archive holds (docs/worker.md): the profile; every team membership, past ones too;
//! the prompts the user owns or wrote for a team; every journal entry the user wrote,
//! personal and team ones — soft-deleted rows included with their `deletedAt`, since the
//! backend still holds them until the purge. Entries other members wrote in the user's teams
//! are theirs, not the user's, and are not included.

pub mod data;
pub mod handlers;
pub mod procedures;
pub mod store;
#[cfg(test)]
mod tests;
pub mod types;

// What the start-up wires to the bus.
pub use self::data::answer_export_data;
pub use self::handlers::on_export_ready;

use self::procedures::create;
use self::procedures::get;
use self::procedures::list;
use crate::http::rpc::RpcRouter;

pub fn routes() -> RpcRouter {
    RpcRouter::new()
        .mutation("exports.create", create)
        .query("exports.get", get)
        .query("exports.list", list)
}
