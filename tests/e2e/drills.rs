//! Fault drills (issue 17): the five real binaries on a private NATS and a private Postgres,
//! a steady load of creates from a few users with an SSE client per user attached, and a
//! fault injected a few times at random moments:
//!
//! - NATS killed (SIGKILL) and restarted;
//! - a worker (of two), the api and the streamer each SIGKILLed and restarted;
//! - Postgres restarted, and stopped for 10 s;
//! - two cron replicas, the one in the middle of a run SIGKILLed.
//!
//! After each drill: no acknowledged write is lost, the worker's effects of every entry are
//! there exactly once, every SSE client holds what the database holds, having received each
//! of its user's changesets once and in order (no gap, no duplicate), and the recovery bounds
//! hold: after NATS returns a new write reaches an attached client within 2 s, after Postgres
//! returns within 1 s, and a killed worker's work is redone within 10 s. Every recovery time
//! is printed; a missed bound fails the drill after the invariants were checked.
//!
//! The timing comes from a seed (`DRILL_SEED`, printed), the number of rounds from
//! `DRILL_ROUNDS` (default 2). See docs/testing.md, "Fault drills".

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use e2e_tests::drills::{
    Bounds, Cluster, Load, NATS_RECOVERY_BOUND, POSTGRES_RECOVERY_BOUND, Shape, SseClient, Timing,
    User, Verdict, WAIT, WORKER_REDO_BOUND, rounds,
};
use test_support::eventually;
use uuid::Uuid;

/// Users writing, one SSE client each.
const WRITERS: usize = 4;
/// Each writer creates an entry this often: 4 × 12.5/s = 50 writes/s.
const WRITE_PERIOD: Duration = Duration::from_millis(80);
/// No drill runs longer than this (rounds included); a hung recovery fails it, not CI.
const DRILL_LIMIT: Duration = Duration::from_secs(300);

/// A cluster under load with clients attached, and what the drill measured.
struct Drill {
    cluster: Cluster,
    users: Vec<User>,
    clients: Vec<SseClient>,
    load: Option<Load>,
    probes: Vec<String>,
    timing: Timing,
    bounds: Bounds,
}

impl Drill {
    async fn start(name: &str, shape: Shape) -> Self {
        let timing = Timing::from_env(name);
        let cluster = Cluster::start(shape).await;
        let users = cluster.users(WRITERS).await;
        let mut clients = Vec::new();
        for user in &users {
            clients.push(cluster.follow(user).await);
        }
        let load = Load::start(&cluster.api.base_url(), &users, WRITE_PERIOD);
        Self {
            cluster,
            users,
            clients,
            load: Some(load),
            probes: Vec::new(),
            timing,
            bounds: Bounds::default(),
        }
    }

    /// Let the load run for a random while (1 to 3 s).
    async fn pause(&mut self) {
        tokio::time::sleep(self.timing.millis(1_000, 3_000)).await;
    }

    /// A new write as soon as the api takes one, and how long after `since` it reached the
    /// writer's attached SSE client.
    async fn probe(&mut self, what: &str, since: Instant, bound: Duration) {
        let user = &self.users[0];
        let (id, _) = self.cluster.probe_write(user, what).await;
        self.probes.push(id.clone());
        let client = &self.clients[0];
        let arrived = eventually(WAIT, || async { client.arrival(&id).is_some() }).await;
        assert!(
            arrived,
            "{what}: the probe write never reached the SSE client (seed {})",
            self.timing.seed
        );
        let took = client.arrival(&id).expect("arrived") - since;
        self.bounds.record(what, took, bound);
    }

    /// Stop the load and check everything the drill must leave true.
    async fn finish(mut self) {
        let report = self.load.take().expect("the load runs").finish().await;
        eprintln!(
            "drill load: {} writes acknowledged; not acknowledged: {:?}; client streams: {:?}",
            report.acknowledged.len(),
            report.refusals,
            self.clients
                .iter()
                .map(SseClient::sessions)
                .collect::<Vec<_>>()
        );
        self.cluster.assert_alive();
        report.assert_refusals_only_unavailable();
        let mut acknowledged = report.acknowledged;
        acknowledged.extend(self.probes.iter().cloned());
        Verdict {
            cluster: &self.cluster,
            users: &self.users,
            clients: &self.clients,
            acknowledged: &acknowledged,
        }
        .assert_all()
        .await;
        self.bounds.assert_met(self.timing.seed);
        drop(self.clients);
        self.cluster.stop().await;
    }
}

/// Run `drill` within [`DRILL_LIMIT`], naming the seed if it does not finish.
async fn bounded(seed_hint: &str, drill: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(DRILL_LIMIT, drill)
        .await
        .unwrap_or_else(|_| panic!("the {seed_hint} drill did not finish in {DRILL_LIMIT:?}"));
}

/// Take a server away (`fault`, which kills it), leave it down for `down`, bring it back
/// (`heal`), and measure how soon after it is back a new write reaches an attached client.
/// Both block while they wait for the server's port.
async fn outage(
    drill: &mut Drill,
    what: &str,
    bound: Duration,
    down: Duration,
    fault: impl FnOnce(&mut Cluster),
    heal: impl FnOnce(&mut Cluster),
) {
    tokio::task::block_in_place(|| fault(&mut drill.cluster));
    tokio::time::sleep(down).await;
    tokio::task::block_in_place(|| heal(&mut drill.cluster));
    let back = Instant::now();
    drill.probe(what, back, bound).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_and_restarted_under_writes_with_clients_attached() {
    bounded("NATS", async {
        let mut drill = Drill::start(
            "nats-kill",
            Shape {
                workers: 1,
                crons: 1,
            },
        )
        .await;
        for round in 1..=rounds() {
            drill.pause().await;
            let down = drill.timing.millis(2_000, 6_000);
            let what = format!("round {round}: NATS back → a new write at a client");
            outage(
                &mut drill,
                &what,
                NATS_RECOVERY_BOUND,
                down,
                |cluster| {
                    cluster.nats.stop();
                },
                |cluster| cluster.nats.resume(),
            )
            .await;
        }
        drill.pause().await;
        drill.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_api_and_streamer_killed_mid_load_and_restarted() {
    bounded("process kill", async {
        let mut drill = Drill::start(
            "process-kill",
            Shape {
                workers: 2,
                crons: 1,
            },
        )
        .await;
        for round in 1..=rounds() {
            let mut victims = vec!["worker", "api", "sync-streamer"];
            // A random order per round.
            for left in (1..victims.len()).rev() {
                let pick = drill.timing.below(left as u64 + 1) as usize;
                victims.swap(left, pick);
            }
            for victim in victims {
                drill.pause().await;
                match victim {
                    "worker" => kill_a_worker(&mut drill, round).await,
                    "api" => {
                        drill.cluster.api.kill().await;
                        tokio::time::sleep(drill.timing.millis(0, 1_500)).await;
                        drill.cluster.api.restart().await;
                    }
                    _ => {
                        drill.cluster.streamer.kill().await;
                        tokio::time::sleep(drill.timing.millis(0, 1_500)).await;
                        drill.cluster.streamer.restart().await;
                        let reattached = eventually(WAIT, || async {
                            drill.clients.iter().all(SseClient::caught_up)
                        })
                        .await;
                        assert!(reattached, "the clients never got a stream again");
                    }
                }
            }
        }
        drill.pause().await;
        drill.finish().await;
    })
    .await;
}

/// SIGKILL one of the two workers; the other must redo its unfinished work: every entry
/// written before the kill has its worker effect within [`WORKER_REDO_BOUND`]. Then the
/// killed one starts again.
async fn kill_a_worker(drill: &mut Drill, round: usize) {
    let victim = drill.timing.below(drill.cluster.workers.len() as u64) as usize;
    let killed_at: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&drill.cluster.pool)
        .await
        .unwrap();
    let killed = Instant::now();
    drill.cluster.workers[victim].kill().await;
    // Polled more often than `eventually` does: the time is compared with the bound.
    let deadline = killed + WAIT;
    loop {
        let undone: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM api.journal_entries e WHERE e.created_at <= $1
                AND NOT EXISTS (SELECT 1 FROM worker.journal_entry_activity a
                                 WHERE a.journal_entry_id = e.journal_entry_id)",
        )
        .bind(killed_at)
        .fetch_one(&drill.cluster.pool)
        .await
        .unwrap();
        if undone == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "round {round}: the work of the killed worker was never redone: {undone} entries \
             without their effect (seed {})",
            drill.timing.seed
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drill.bounds.record(
        &format!("round {round}: worker killed → its work redone"),
        killed.elapsed(),
        WORKER_REDO_BOUND,
    );
    drill.cluster.workers[victim].restart().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_and_stopped_for_10_s_under_writes() {
    bounded("Postgres", async {
        let mut drill = Drill::start(
            "postgres",
            Shape {
                workers: 1,
                crons: 1,
            },
        )
        .await;
        for round in 1..=rounds() {
            drill.pause().await;
            let what = format!("round {round}: Postgres restarted → a new write at a client");
            outage(
                &mut drill,
                &what,
                POSTGRES_RECOVERY_BOUND,
                Duration::ZERO,
                |cluster| {
                    cluster.postgres.stop();
                },
                |cluster| cluster.postgres.resume(),
            )
            .await;
            drill.pause().await;
            let what = format!("round {round}: Postgres back after 10 s → a new write at a client");
            outage(
                &mut drill,
                &what,
                POSTGRES_RECOVERY_BOUND,
                Duration::from_secs(10),
                |cluster| {
                    cluster.postgres.stop();
                },
                |cluster| cluster.postgres.resume(),
            )
            .await;
        }
        drill.pause().await;
        drill.finish().await;
    })
    .await;
}

/// A cron run as the history has it.
#[derive(Debug, sqlx::FromRow)]
struct Run {
    job_run_id: Uuid,
    scheduled_for: DateTime<Utc>,
    outcome: String,
    replica_id: String,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    message_ids: Vec<Uuid>,
}

async fn runs(drill: &Drill) -> Vec<Run> {
    sqlx::query_as(
        "SELECT job_run_id, scheduled_for, outcome, replica_id, started_at, finished_at,
                message_ids
           FROM cron.job_runs WHERE job_name = 'dispatch-due-prompts' ORDER BY scheduled_for",
    )
    .fetch_all(&drill.cluster.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cron_replicas_with_the_leader_killed_mid_run() {
    bounded("cron", async {
        let mut drill = Drill::start("cron-leader", Shape { workers: 1, crons: 2 }).await;
        let mut killed_runs = Vec::new();
        for round in 1..=rounds() {
            drill.pause().await;
            // Hold cron's outbox: the next run takes the lease and is recorded `running`, then
            // waits to insert the task it emits — a run caught in the middle.
            let mut hold = drill.cluster.pool.begin().await.unwrap();
            sqlx::query("LOCK TABLE cron.outbox IN SHARE MODE")
                .execute(&mut *hold)
                .await
                .unwrap();
            let held_at = Utc::now();
            let deadline = Instant::now() + WAIT;
            let running = loop {
                let running: Option<(Uuid, String)> = sqlx::query_as(
                    "SELECT job_run_id, replica_id FROM cron.job_runs
                      WHERE outcome = 'running' AND started_at >= $1",
                )
                .bind(held_at - TimeDelta::seconds(1))
                .fetch_optional(&drill.cluster.pool)
                .await
                .unwrap();
                if running.is_some() || Instant::now() > deadline {
                    break running;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let (run_id, leader) = running.unwrap_or_else(|| {
                panic!("round {round}: no run started while cron's outbox was held")
            });
            tokio::time::sleep(drill.timing.millis(0, 500)).await;
            let index: usize = leader
                .strip_prefix("replica-")
                .and_then(|index| index.parse().ok())
                .unwrap_or_else(|| panic!("unknown replica {leader}"));
            drill.cluster.crons[index].kill().await;
            let killed = Instant::now();
            let killed_at = Utc::now();
            hold.rollback().await.unwrap();
            killed_runs.push(run_id);
            // The survivor runs the job again once the dead leader's lease has lapsed.
            let taken_over = eventually(WAIT, || async {
                runs(&drill).await.iter().any(|run| {
                    run.outcome == "succeeded" && run.replica_id != leader && run.started_at > killed_at
                })
            })
            .await;
            assert!(
                taken_over,
                "round {round}: the surviving replica never ran the job after the leader died: {:?}",
                runs(&drill).await
            );
            eprintln!(
                "drill recovery: round {round}: cron leader killed mid-run → the survivor ran the \
                 job after {:?} (lease 3 s)",
                killed.elapsed()
            );
            drill.cluster.crons[index].restart().await;
        }
        drill.pause().await;
        check_cron_history(&drill, &killed_runs).await;
        drill.finish().await;
    })
    .await;
}

/// Each killed run ended `abandoned` having emitted nothing, no two runs overlapped, and
/// each successful run put exactly one task on the bus.
async fn check_cron_history(drill: &Drill, killed_runs: &[Uuid]) {
    drill.cluster.settle().await;
    let history = runs(drill).await;
    for killed in killed_runs {
        let run = history
            .iter()
            .find(|run| run.job_run_id == *killed)
            .expect("the killed run is in the history");
        assert_eq!(run.outcome, "abandoned", "{run:?}");
        assert!(run.message_ids.is_empty(), "a killed run emitted: {run:?}");
    }
    let mut succeeded: Vec<&Run> = history
        .iter()
        .filter(|run| run.outcome == "succeeded")
        .collect();
    assert!(succeeded.len() >= 3, "{history:?}");
    succeeded.sort_by_key(|run| run.started_at);
    for pair in succeeded.windows(2) {
        assert!(
            pair[0].finished_at.expect("finished") <= pair[1].started_at,
            "two runs at once: {pair:?}"
        );
    }
    let emitted: Vec<String> = succeeded
        .iter()
        .flat_map(|run| run.message_ids.iter().map(Uuid::to_string))
        .collect();
    assert_eq!(
        emitted.len(),
        succeeded.len(),
        "one task per run: {history:?}"
    );
    // The cron drill's cluster publishes no other task: TASKS holds each stored once.
    let stored = drill.cluster.last_sequence("TASKS").await;
    assert_eq!(
        stored,
        emitted.len() as u64,
        "TASKS got other than one task per successful run"
    );
    let scheduled: Vec<DateTime<Utc>> = history.iter().map(|run| run.scheduled_for).collect();
    let distinct: std::collections::BTreeSet<&DateTime<Utc>> = scheduled.iter().collect();
    assert_eq!(distinct.len(), scheduled.len(), "a tick ran twice");
}
