//! The tiers a procedure runs in, defined once as axum extractors (ARCHITECTURE §6):
//! public, protected and sensitive ([`session`]: `MaybeSession`, `Protected`, `Sensitive`),
//! the open API's key ([`api_key`]) and the cron secret ([`cron_secret`]).

pub mod api_key;
pub mod cron_secret;
pub mod session;
