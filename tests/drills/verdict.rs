//! What must hold after a drill, and the recovery times measured against the bounds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use uuid::Uuid;

use super::cluster::{Cluster, User};
use super::{SseClient, WAIT};

/// What the drill wrote and what must hold after it.
pub struct Verdict<'a> {
    pub cluster: &'a Cluster,
    pub users: &'a [User],
    pub clients: &'a [SseClient],
    /// Ids of every entry whose create was answered 200.
    pub acknowledged: &'a [String],
}

impl Verdict<'_> {
    /// The checks every drill ends with: no acknowledged write lost, every entry's worker
    /// effects exactly once, and every SSE client equal to the database with no gap and no
    /// duplicate.
    pub async fn assert_all(&self) {
        self.cluster.settle().await;
        self.wait_for_insights_published().await;
        self.assert_no_acknowledged_write_lost().await;
        self.assert_effects_exactly_once().await;
        self.assert_clients_equal_the_database().await;
    }

    /// The worker publishes a user's changed insights a short window after the change
    /// (`insight_sync_due`), so a settled cluster may still owe a changeset in the user's
    /// scope. Waited for here, then settled again: the CHANGES stream read below must hold
    /// every changeset a client will receive.
    async fn wait_for_insights_published(&self) {
        let due: i64 = sqlx::query_scalar("SELECT count(*) FROM worker.insight_sync_due")
            .fetch_one(&self.cluster.pool)
            .await
            .expect("counting unpublished insight changes");
        if due > 0 {
            eprintln!("drill verdict: {due} insight changes were unpublished once settled");
        }
        let published = test_support::eventually(WAIT, || async {
            let due: i64 = sqlx::query_scalar("SELECT count(*) FROM worker.insight_sync_due")
                .fetch_one(&self.cluster.pool)
                .await
                .expect("counting unpublished insight changes");
            due == 0
        })
        .await;
        assert!(published, "the worker never published its insight changes");
        self.cluster.settle().await;
    }

    async fn assert_no_acknowledged_write_lost(&self) {
        let acknowledged: Vec<Uuid> = self
            .acknowledged
            .iter()
            .map(|id| id.parse().expect("an entry id"))
            .collect();
        assert!(
            acknowledged.len() >= 100,
            "the load got only {} writes acknowledged",
            acknowledged.len()
        );
        let stored: Vec<Uuid> = sqlx::query_scalar(
            "SELECT journal_entry_id FROM api.journal_entries WHERE journal_entry_id = ANY($1)",
        )
        .bind(&acknowledged)
        .fetch_all(&self.cluster.pool)
        .await
        .expect("reading entries");
        let stored: BTreeSet<Uuid> = stored.into_iter().collect();
        let lost: Vec<&Uuid> = acknowledged
            .iter()
            .filter(|id| !stored.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged writes are not in the database: {lost:?}",
            lost.len(),
            acknowledged.len()
        );
    }

    /// The worker's effects of each entry: one activity row, and per user totals that count
    /// each entry once (an effect applied twice would count it twice).
    async fn assert_effects_exactly_once(&self) {
        let pool = &self.cluster.pool;
        let without_activity: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM api.journal_entries e
              WHERE NOT EXISTS (SELECT 1 FROM worker.journal_entry_activity a
                                 WHERE a.journal_entry_id = e.journal_entry_id)",
        )
        .fetch_one(pool)
        .await
        .expect("counting entries without activity");
        assert_eq!(without_activity, 0, "entries the worker never recorded");
        for user in self.users {
            let entries: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM api.journal_entries
                  WHERE author_user_id = $1 AND deleted_at IS NULL",
            )
            .bind(user.user_id)
            .fetch_one(pool)
            .await
            .expect("counting entries");
            let (counted, words): (i32, i64) = sqlx::query_as(
                "SELECT entry_count, word_count FROM worker.entry_insights WHERE user_id = $1",
            )
            .bind(user.user_id)
            .fetch_optional(pool)
            .await
            .expect("reading insights")
            .unwrap_or((0, 0));
            assert_eq!(
                i64::from(counted),
                entries,
                "user {}: the worker counted {counted} entries, the database has {entries}",
                user.user_id
            );
            let activity_words: i64 = sqlx::query_scalar(
                "SELECT coalesce(sum(word_count), 0)::bigint FROM worker.journal_entry_activity
                  WHERE author_user_id = $1 AND NOT deleted",
            )
            .bind(user.user_id)
            .fetch_one(pool)
            .await
            .expect("summing words");
            assert_eq!(words, activity_words, "user {}: word totals", user.user_id);
            let per_day: i64 = sqlx::query_scalar(
                "SELECT coalesce(sum(entry_count), 0)::bigint FROM worker.entry_insight_days
                  WHERE user_id = $1 AND deleted_at IS NULL",
            )
            .bind(user.user_id)
            .fetch_one(pool)
            .await
            .expect("summing days");
            assert_eq!(per_day, entries, "user {}: entries per day", user.user_id);
        }
    }

    async fn assert_clients_equal_the_database(&self) {
        let changes = self.cluster.changes().await;
        for client in self.clients {
            let user_id = client.user_id;
            let expected = self.entries_of(user_id).await;
            let scope = format!("user.{user_id}");
            let in_scope: BTreeSet<u64> = changes
                .iter()
                .filter(|(_, changeset_scope)| **changeset_scope == scope)
                .map(|(seq, _)| *seq)
                .collect();
            let last = in_scope.last().copied().unwrap_or(0);
            let converged = test_support::eventually(WAIT, || async {
                client.entries() == expected && client.cursor() >= last
            })
            .await;
            assert!(
                converged,
                "user {user_id}: the client's copy differs from the database: {} entries \
                 ({} missing, {} extra or at another version), cursor {} of {last}",
                expected.len(),
                expected
                    .iter()
                    .filter(|(id, _)| !client.entries().contains_key(*id))
                    .count(),
                client
                    .entries()
                    .iter()
                    .filter(|(id, version)| expected.get(*id) != Some(version))
                    .count(),
                client.cursor()
            );
            client.assert_no_gap_and_no_duplicate(&in_scope);
        }
    }

    /// The user's live entries in the database: id → version.
    async fn entries_of(&self, user_id: Uuid) -> BTreeMap<String, i64> {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT journal_entry_id, version FROM api.journal_entries
              WHERE author_user_id = $1 AND team_id IS NULL AND deleted_at IS NULL",
        )
        .bind(user_id)
        .fetch_all(&self.cluster.pool)
        .await
        .expect("reading entries");
        rows.into_iter()
            .map(|(id, version)| (id.to_string(), version))
            .collect()
    }
}

/// Recovery times measured against the bounds; every one is printed, and the drill
/// fails at its end (after the invariants were checked) with every bound that was missed.
#[derive(Default)]
pub struct Bounds {
    missed: Vec<String>,
}

impl Bounds {
    pub fn record(&mut self, what: &str, took: Duration, bound: Duration) {
        let verdict = if took <= bound { "within" } else { "OVER" };
        eprintln!("drill recovery: {what}: {took:?} ({verdict} the bound of {bound:?})");
        if took > bound {
            self.missed.push(format!(
                "{what}: {took:?} > {bound:?} (over by {:?})",
                took - bound
            ));
        }
    }

    pub fn assert_met(&self, seed: u64) {
        assert!(
            self.missed.is_empty(),
            "recovery bounds missed (DRILL_SEED={seed}):\n{}",
            self.missed.join("\n")
        );
    }
}
