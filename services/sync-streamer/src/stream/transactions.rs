//! Live changesets into frames: the parts of a transaction the client follows go out as one
//! `change` frame once all are in (or their wait ends), each row version once, and the cursor
//! says exactly what the client holds (docs/sync.md, "Transactions" and "Cursors").

use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use sync_protocol::changes::Scope;
use sync_protocol::cursor::MAX_SENT_PAST;
use sync_protocol::tables;

use super::live::{Connection, Flow, Gone};
use crate::catchup;
use crate::changesets::LiveChangeset;
use sync_protocol::frames::{CloseReason, Frame, LiveChange};

impl Connection {
    /// One changeset from the handoff gap or the queue, in stream order: sent with the rest of
    /// its transaction once the parts the client follows are all in.
    pub(super) async fn take(&mut self, changeset: Arc<LiveChangeset>) -> Result<Flow, Gone> {
        if changeset.seq <= self.taken || !self.follows(&changeset.scope) {
            return Ok(Flow::Continue);
        }
        self.taken = changeset.seq;
        if self.cursor.holds(changeset.seq) {
            // Sent on an earlier connection, past a transaction that was waiting then.
            return Ok(Flow::Continue);
        }
        // The cursor lists what went out past a waiting transaction: past a bound, the oldest
        // waiting transaction goes out as far as it got, so the cursor stays short.
        while self.cursor.listed().len() >= MAX_SENT_PAST && !self.assembling.is_empty() {
            if let Flow::Stop = self.give_up_oldest_wait("held too much up").await? {
                return Ok(Flow::Stop);
            }
        }
        let Some(part) = changeset.transaction.clone() else {
            return self.deliver("", vec![changeset]).await;
        };
        let expected: Vec<usize> = part
            .scopes
            .iter()
            .enumerate()
            .filter(|(_, scope)| self.follows(scope))
            .map(|(index, _)| index)
            .collect();
        if expected.len() <= 1 || self.finished.contains(&part.id) {
            return self.deliver(&part.id, vec![changeset]).await;
        }
        let position = match self
            .assembling
            .iter()
            .position(|assembly| assembly.id == part.id)
        {
            Some(position) => position,
            None => {
                self.assembling.push(Assembly {
                    id: part.id.clone(),
                    expected,
                    parts: Vec::new(),
                    deadline: tokio::time::Instant::now() + self.state.config.transaction_wait,
                });
                self.assembling.len() - 1
            }
        };
        let assembly = &mut self.assembling[position];
        assembly.parts.push(changeset);
        let complete = assembly.expected.iter().all(|index| {
            assembly.parts.iter().any(|part| {
                part.transaction
                    .as_ref()
                    .is_some_and(|transaction| transaction.index == *index)
            })
        });
        if !complete {
            return Ok(Flow::Continue);
        }
        let assembly = self.assembling.remove(position);
        self.deliver(&assembly.id, assembly.parts).await
    }

    /// Stop waiting for the oldest waiting transaction: it goes out with the parts it has.
    pub(super) async fn give_up_oldest_wait(&mut self, why: &'static str) -> Result<Flow, Gone> {
        if self.assembling.is_empty() {
            return Ok(Flow::Continue);
        }
        let assembly = self.assembling.remove(0);
        tracing::debug!(
            transaction = %assembly.id,
            why,
            "sending a transaction without the parts still missing"
        );
        metrics::counter!("sync_stream_split_transactions_total").increment(1);
        Box::pin(self.deliver(&assembly.id, assembly.parts)).await
    }

    /// One transaction's parts (those the client follows that arrived): membership moves, then
    /// one `change` frame with each row version once.
    pub(super) async fn deliver(
        &mut self,
        transaction_id: &str,
        parts: Vec<Arc<LiveChangeset>>,
    ) -> Result<Flow, Gone> {
        if !transaction_id.is_empty() {
            if self.finished.len() >= FINISHED_MEMORY {
                self.finished.pop_front();
            }
            self.finished.push_back(transaction_id.to_owned());
        }
        let last_seq = parts
            .iter()
            .map(|part| part.seq)
            .max()
            .unwrap_or(self.taken);
        // The client's own membership is in its scope and the team's: either part tells (a
        // part that came alone after the wait as well).
        let mut left = Vec::new();
        for part in &parts {
            for change in part
                .changes
                .iter()
                .filter(|change| change.table == tables::TEAM_MEMBERS)
            {
                let Some((team_id, active, _)) =
                    catchup::own_membership(change.data.get(), self.claims.user_id)
                else {
                    continue;
                };
                if active && !self.effective.contains(&team_id) {
                    // Joined a team: the client needs that team's rows from the start, which
                    // a reconnect gives it once the read model has the membership.
                    self.wait_for_watermark(last_seq).await;
                    self.close(CloseReason::ScopesChanged).await?;
                    return Ok(Flow::Stop);
                }
                if !active && self.effective.contains(&team_id) && !left.contains(&team_id) {
                    left.push(team_id);
                }
            }
        }
        for team_id in &left {
            self.effective.remove(team_id);
        }
        // The cursor: everything up to the first part still waiting (or everything taken),
        // and this transaction's parts (with any others sent past a waiting one). A client
        // resuming from it gets every waiting transaction whole and these parts never again.
        let before = self.cursor.to_string();
        for part in &parts {
            self.cursor.add(part.seq);
        }
        let through = self
            .assembling
            .iter()
            .flat_map(|assembly| assembly.parts.iter().map(|part| part.seq))
            .min()
            .map_or(self.taken, |first_waiting| first_waiting - 1);
        self.cursor.advance(through);
        let cursor = self.cursor.to_string();
        let visible: Vec<&LiveChangeset> = parts
            .iter()
            .map(Arc::as_ref)
            .filter(|part| {
                part.scope == self.user_scope
                    || matches!(Scope::parse(&part.scope), Some(Scope::Team(team_id)) if self.effective.contains(&team_id))
            })
            .collect();
        let mut in_frame = HashSet::new();
        let mut changes: Vec<&LiveChange> = Vec::new();
        let mut whole = true;
        for part in &visible {
            for change in &part.changes {
                let wanted = self
                    .tables
                    .as_ref()
                    .is_none_or(|tables| tables.contains(&change.table));
                let key = version_key(change);
                if wanted && in_frame.insert(key) && !self.sent_versions.contains(key) {
                    changes.push(change);
                } else {
                    whole = false;
                }
            }
        }
        let plain = self.cursor.listed().is_empty();
        let json = match (visible.as_slice(), whole) {
            // One changeset sent as is: its frame is shared by every client that sees it.
            ([only], true) if plain && only.seq == self.cursor.through() => Some(only.full_frame()),
            _ => (!changes.is_empty()).then(|| {
                Arc::from(
                    Frame::Change {
                        cursor: cursor.clone(),
                        changes: changes.clone(),
                    }
                    .to_json(),
                )
            }),
        };
        for change in &changes {
            self.sent_versions.insert(version_key(change));
        }
        // A removal goes out before the changeset that carries it, with the cursor before
        // that changeset: a client cut off between the two frames resumes before the removal
        // and is told again, whereas one that had the changeset's cursor would not be.
        for team_id in left {
            let frame = Frame::ScopeRemoved {
                scope: Scope::Team(team_id).key(),
                team_id: team_id.to_string(),
                cursor: before.clone(),
            };
            self.send(&frame.to_json(), Some(&before)).await?;
        }
        // Nothing for the client: the cursor moved all the same; the next frame or heartbeat
        // carries it.
        if let Some(json) = json {
            self.send(&json, Some(&cursor)).await?;
        }
        Ok(Flow::Continue)
    }
}

/// How many transaction ids a stream remembers as sent.
const FINISHED_MEMORY: usize = 256;
/// How many row versions a stream remembers as sent live.
const SENT_VERSIONS_MEMORY: usize = 4096;

/// A transaction some of whose parts the client follows have arrived, not all.
pub(super) struct Assembly {
    pub(super) id: String,
    /// The part indexes the client follows.
    pub(super) expected: Vec<usize>,
    pub(super) parts: Vec<Arc<LiveChangeset>>,
    /// When it goes out with what it has.
    pub(super) deadline: tokio::time::Instant,
}

/// A row version's key: a hash of (table, row id, version).
fn version_key(change: &LiveChange) -> u64 {
    let mut hasher = DefaultHasher::new();
    (&change.table, &change.row_id, change.version).hash(&mut hasher);
    hasher.finish()
}

/// The last [`SENT_VERSIONS_MEMORY`] row versions sent.
#[derive(Default)]
pub(super) struct RecentVersions {
    keys: HashSet<u64>,
    order: VecDeque<u64>,
}

impl RecentVersions {
    fn contains(&self, key: u64) -> bool {
        self.keys.contains(&key)
    }

    fn insert(&mut self, key: u64) {
        if !self.keys.insert(key) {
            return;
        }
        if self.order.len() >= SENT_VERSIONS_MEMORY
            && let Some(oldest) = self.order.pop_front()
        {
            self.keys.remove(&oldest);
        }
        self.order.push_back(key);
    }
}
