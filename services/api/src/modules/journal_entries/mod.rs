//! Journal entries: `journalEntries.create|get|list|update|delete|restore`.
//!
//! Every write changes the row, records its changeset (personal entry → the author's scope,
//! team entry → the team's scope) and emits its `journal_entry.*` event in one transaction, so
//! the changeset and the event exist exactly when the change does.
//!
//! Who may do what (checked here, never trusted from the client):
//! - see (`get`, `list`): a personal entry its author; a team entry every active member of the
//!   team. Anything else answers `NOT_FOUND`, the same as an id that does not exist.
//! - change (`update`, `delete`, `restore`): the author; for a team entry also the team's
//!   admins and owners. Someone who can see the entry but not change it gets `FORBIDDEN`.
//! - deleting an entry soft-deletes its attachments in the same transaction; restoring it
//!   restores the ones deleted with it (see `modules::cdn`).
//! - a deleted entry cannot be updated (`409 ENTRY_DELETED`: restore it first); deleting a
//!   deleted entry, or restoring a live one, answers the entry unchanged (no event, no
//!   changeset).
//! - `teamId` on `create`/`list` that is not a team of the caller, and a `promptId` the caller
//!   cannot see (or that is deleted), answer `NOT_FOUND` ("Team not found" / "Prompt not
//!   found"), so ids cannot be probed.

pub mod types;

pub use self::types::JournalEntry;
pub mod create;
pub mod procedures;
pub mod rest;
pub mod store;

use self::procedures::create;
use self::procedures::delete;
use self::procedures::get;
use self::procedures::list;
use self::procedures::restore;
use self::procedures::update;
use crate::contract::errors;
use crate::http::rpc::RpcRouter;

pub fn routes() -> RpcRouter {
    RpcRouter::new()
        .mutation("journalEntries.create", create)
        .query("journalEntries.get", get)
        .query("journalEntries.list", list)
        .mutation("journalEntries.update", update)
        .errors(&[errors::EDIT_CONFLICT, errors::ENTRY_DELETED])
        .mutation("journalEntries.delete", delete)
        .mutation("journalEntries.restore", restore)
}
