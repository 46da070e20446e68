//! Helpers shared by the stream tests: reading frames into a local copy.

use std::time::Duration;

use crate::common::*;

pub(crate) const QUIET: Duration = Duration::from_millis(1500);

/// The titles of the journal entries in a local copy.
pub(crate) fn titles(copy: &LocalCopy) -> Vec<String> {
    copy.rows
        .iter()
        .filter(|(key, _)| key.starts_with("journal_entries/"))
        .filter_map(|(_, row)| row["title"].as_str().map(str::to_owned))
        .collect()
}

/// Read frames into `copy` until one of type `kind` (within 60 s); returns the types read
/// (heartbeats aside).
pub(crate) async fn read_until(sse: &mut Sse, copy: &mut LocalCopy, kind: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut kinds = Vec::new();
    loop {
        let event = sse
            .next(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
            .unwrap_or_else(|| panic!("no `{kind}` frame within 60 s, after {kinds:?}"));
        let seen = copy.apply(&event);
        if seen == "heartbeat" {
            continue;
        }
        kinds.push(seen.clone());
        if seen == kind {
            return kinds;
        }
    }
}
