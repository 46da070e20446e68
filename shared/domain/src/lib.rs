//! Domain newtypes every service shares.
//!
//! - [`ids`]: one type per kind of id (`UserId`, `TeamId`, `JournalEntryId`, ...). A
//!   `TeamId` cannot be passed where a `UserId` is wanted, and an id is parsed once where it
//!   enters (a request's JSON, a path segment, a bus message's string field) and travels typed
//!   from there: in SQL binds (`sqlx` sees a `uuid`), in wire types (serde sees the uuid
//!   string) and in the messages the services emit.
//! - [`time`]: [`time::EpochMillis`], an instant that is epoch milliseconds on the wire and
//!   `timestamptz` in SQL, and [`time::DateInput`], a client's `YYYY-MM-DD` date parsed once.
//!
//! The wire and SQL shapes are exactly those of the plain `Uuid` / `DateTime<Utc>` they
//! replace, so switching a field to a newtype changes no request, response or message.

pub mod ids;
pub mod time;
