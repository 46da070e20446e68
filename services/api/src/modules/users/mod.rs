//! Users: the profile (`users.me`, `users.update`) and account deletion (`users.delete`,
//! sensitive). A user row is synced to its own scope. Sign-in paths create or find users
//! through [`store::find_or_create`].

pub mod account_purge;
pub mod procedures;
pub mod store;
pub mod types;

use self::procedures::{delete, me, update};
use crate::contract::errors;
use crate::http::rpc::RpcRouter;

pub fn routes() -> RpcRouter {
    RpcRouter::new()
        .query("users.me", me)
        .mutation("users.update", update)
        .mutation("users.delete", delete)
        .errors(&[
            errors::LAST_OWNER,
            errors::SESSION_NOT_FRESH,
            errors::STORAGE_UNAVAILABLE,
        ])
}
