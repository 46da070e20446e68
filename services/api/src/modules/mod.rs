//! The api's features, one folder each: its types, its store (SQL), its procedures and, where
//! it has them, its open-API REST handlers and bus handlers. The routers (`crate::routers`)
//! wire the procedures to paths.

pub mod auth;
pub mod cdn;
pub mod exports;
pub mod journal_entries;
pub mod logs;
pub mod prompts;
pub mod subscriptions;
pub mod sync;
pub mod teams;
pub mod users;
