//! Sync changesets: the writer, scopes and synced-row trait live in `sync_protocol::changes`
//! (one home for every service that writes synced rows); this module names them for the api's
//! modules and maps the writer's error.

pub use sync_protocol::changes::{Changes, Op, Scope, SyncedRow};

use sync_protocol::changes::RowNotSerializable;

use crate::error::ApiError;

impl From<RowNotSerializable> for ApiError {
    /// A synced row that does not serialize is a bug in its type, never the client's input.
    fn from(error: RowNotSerializable) -> Self {
        Self::internal(error)
    }
}
