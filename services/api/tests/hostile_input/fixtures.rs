//! The origin a cross-site attacker sends, shared by the method tests and the wall.

pub(crate) const HOSTILE_ORIGIN: &str = "https://evil.example";
