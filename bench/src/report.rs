//! Results: one [`Measurement`] per scenario variant, printed as a table and JSON lines.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::measure::{LoadMode, LoadResult};

/// One measured variant of a scenario (one row of the table, one JSON line).
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub scenario: String,
    pub variant: String,
    pub mode: LoadMode,
    /// Closed loop: concurrent tasks. Open loop: the cap on operations in flight.
    pub concurrency: usize,
    /// Open loop only: the operations per second asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_rate: Option<f64>,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Successful operations in the measured window.
    pub ops: u64,
    pub errors: u64,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// When the measurement finished.
    pub recorded_at: DateTime<Utc>,
    /// Whole-system figures (`system-create` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemFigures>,
}

/// What `system-create` measures besides request latency (docs/benchmarks.md).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SystemFigures {
    /// Entries whose `created_at` falls in the measured window (the divisor of the per-create
    /// figures).
    pub creates_in_window: i64,
    /// `creates_in_window` / the window: the rate the system actually committed creates at.
    /// (`ops_per_sec` counts requests *scheduled* in the window that succeeded, however late:
    /// past saturation it shows the offered rate, not the achieved one.)
    pub creates_per_s: f64,
    /// Create → the worker's effect: the entry's `created_at` → when the worker applied its
    /// event (`event_lag_source` says which timestamp), over the window's entries.
    pub event_lag_p50_ms: f64,
    pub event_lag_p99_ms: f64,
    pub event_lag_source: String,
    /// Entries of the window the worker had still not applied when the lags were read (after
    /// the drain wait); each counts with its age then, so the quantiles are lower bounds.
    pub event_lag_unapplied: i64,
    /// Entry `createdAt` (ms) → the `change` frame's arrival at the attached SSE client.
    pub sse_p50_ms: f64,
    pub sse_p99_ms: f64,
    pub sse_samples: u64,
    /// Entries of the measured user created in the window whose frame never arrived.
    pub sse_missing: i64,
    /// Set when the stream ended early (e.g. a `closed` frame's reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sse_ended: Option<String>,
    /// `pg_current_wal_lsn` delta over the measured window / creates in it (cluster-wide WAL).
    pub wal_bytes_per_create: f64,
    /// The bench database's `pg_stat_database.xact_commit` delta over the window / creates in
    /// it (the bench's own monitoring queries subtracted).
    pub commits_per_create: f64,
    /// The same from the start of the load (warmup included) until the backlog drained (or
    /// the drain wait ended), over every entry created: includes the work consumers did late.
    pub wal_bytes_per_create_drained: f64,
    pub commits_per_create_drained: f64,
    /// Whether the backlog reached zero within the drain wait, and how long it took.
    pub drained: bool,
    pub drain_s: f64,
    /// Commits of the other databases on the server during the window: how much someone
    /// else wrote into the (cluster-wide) WAL figure.
    pub other_databases_commits: i64,
    /// Checkpoints (timed + requested) during the window.
    pub checkpoints: i64,
    /// CPU over the measured window per process (group), in percent of one core (the machine
    /// has `cores` × 100 %). `machine` is all CPU time the kernel counted; `other` what is not
    /// in the listed processes.
    pub cpu_percent: BTreeMap<String, f64>,
    /// Rows written per create from the load's start until drained, per `schema.table`
    /// (`pg_stat_user_tables`; tables with none left out): who writes what, so the WAL and
    /// commits above can be split by service (each service owns one schema).
    pub row_writes_per_create_drained: BTreeMap<String, RowWrites>,
    /// What was left when the load stopped.
    pub backlog: Backlog,
    /// `/proc/loadavg` when the run started.
    pub load_average: String,
}

/// Rows one table gained, changed and lost, per create.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RowWrites {
    pub inserted: f64,
    pub updated: f64,
    /// Of `updated`, those that were HOT (no index entry written).
    pub hot_updated: f64,
    pub deleted: f64,
}

/// The backlog at the moment the load stopped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Backlog {
    /// Outbox rows not yet published, per schema.
    pub outbox_unsent: BTreeMap<String, i64>,
    /// Messages not yet delivered plus delivered but unacknowledged, per `STREAM/consumer`
    /// (stream without the namespace; consumers owing nothing are left out).
    pub consumer_pending: BTreeMap<String, u64>,
    /// Entries with no `worker.journal_entry_activity` row yet.
    pub worker_behind: i64,
    /// CHANGES stream's last sequence − the materializer's watermark.
    pub materializer_behind: i64,
}

impl Backlog {
    pub fn outbox_total(&self) -> i64 {
        self.outbox_unsent.values().sum()
    }

    pub fn pending_total(&self) -> u64 {
        self.consumer_pending.values().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.outbox_total() == 0
            && self.pending_total() == 0
            && self.worker_behind == 0
            && self.materializer_behind == 0
    }
}

impl Measurement {
    pub fn from_load(scenario: &str, variant: impl Into<String>, load: &LoadResult) -> Self {
        Self {
            scenario: scenario.to_owned(),
            variant: variant.into(),
            mode: load.mode,
            concurrency: load.concurrency,
            target_rate: load.target_rate,
            warmup_s: load.warmup.as_secs_f64(),
            duration_s: load.window.as_secs_f64(),
            ops: load.ops,
            errors: load.errors,
            ops_per_sec: load.ops_per_sec(),
            p50_ms: load.quantile_ms(0.50),
            p90_ms: load.quantile_ms(0.90),
            p99_ms: load.quantile_ms(0.99),
            max_ms: load.max_ms(),
            mean_ms: load.mean_ms(),
            first_error: load.first_error.clone(),
            recorded_at: Utc::now(),
            system: None,
        }
    }

    /// A one-line summary for progress output.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{:.0} ops/s, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms, {} errors",
            self.ops_per_sec, self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms, self.errors
        );
        if let Some(error) = &self.first_error {
            line.push_str(&format!(" (first: {error})"));
        }
        line
    }

    pub fn to_json_line(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string(self)?)
    }
}

const HEADERS: [&str; 9] = [
    "scenario",
    "variant",
    "concurrency",
    "ops/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "errors",
];

/// Render measurements as an aligned text table (text columns left, numbers right).
pub fn table(measurements: &[Measurement]) -> String {
    let rows: Vec<Vec<String>> = measurements
        .iter()
        .map(|m| {
            [
                m.scenario.clone(),
                m.variant.clone(),
                m.concurrency.to_string(),
                format!("{:.0}", m.ops_per_sec),
                format!("{:.3}", m.p50_ms),
                format!("{:.3}", m.p90_ms),
                format!("{:.3}", m.p99_ms),
                format!("{:.3}", m.max_ms),
                m.errors.to_string(),
            ]
            .to_vec()
        })
        .collect();
    render(&HEADERS, &rows, 2)
}

const SYSTEM_HEADERS: [&str; 15] = [
    "variant",
    "load",
    "req ok/s",
    "creates/s",
    "req p50",
    "req p99",
    "lag p50",
    "lag p99",
    "sse p50",
    "sse p99",
    "WAL B/create",
    "commits/create",
    "outbox unsent",
    "pending",
    "worker behind",
];

/// `system-create`'s figures: one row per measurement that has them (latencies in ms; a `≥`
/// marks event lags that are lower bounds because some events were still unapplied).
pub fn system_table(measurements: &[Measurement]) -> String {
    let rows: Vec<Vec<String>> = measurements
        .iter()
        .filter_map(|m| m.system.as_ref().map(|system| (m, system)))
        .map(|(m, system)| {
            let lag_mark = if system.event_lag_unapplied > 0 {
                "≥"
            } else {
                ""
            };
            let (variant, load) = split_variant(&m.variant);
            vec![
                variant.to_owned(),
                load.to_owned(),
                format!("{:.0}", m.ops_per_sec),
                format!("{:.0}", system.creates_per_s),
                format!("{:.1}", m.p50_ms),
                format!("{:.1}", m.p99_ms),
                format!("{lag_mark}{:.1}", system.event_lag_p50_ms),
                format!("{lag_mark}{:.1}", system.event_lag_p99_ms),
                format!("{:.1}", system.sse_p50_ms),
                format!("{:.1}", system.sse_p99_ms),
                format!("{:.0}", system.wal_bytes_per_create),
                format!("{:.2}", system.commits_per_create),
                system.backlog.outbox_total().to_string(),
                system.backlog.pending_total().to_string(),
                system.backlog.worker_behind.to_string(),
            ]
        })
        .collect();
    render(&SYSTEM_HEADERS, &rows, 2)
}

/// The CPU columns of [`cpu_table`], in order (keys of [`SystemFigures::cpu_percent`]).
pub const CPU_COLUMNS: [&str; 11] = [
    "machine",
    "postgres",
    "api",
    "sync-streamer",
    "worker",
    "cron",
    "notifier",
    "nats-server",
    "s3s-fs",
    "bench",
    "other",
];

/// CPU per process over each measured window, % of one core.
pub fn cpu_table(measurements: &[Measurement]) -> String {
    let mut headers = vec!["variant", "load"];
    headers.extend(CPU_COLUMNS);
    let rows: Vec<Vec<String>> = measurements
        .iter()
        .filter_map(|m| m.system.as_ref().map(|system| (m, system)))
        .map(|(m, system)| {
            let (variant, load) = split_variant(&m.variant);
            let mut row = vec![variant.to_owned(), load.to_owned()];
            row.extend(CPU_COLUMNS.iter().map(|column| {
                system
                    .cpu_percent
                    .get(*column)
                    .map_or_else(|| "-".to_owned(), |percent| format!("{percent:.0} %"))
            }));
            row
        })
        .collect();
    render(&headers, &rows, 2)
}

/// `many-users open 500/s` → (`many-users`, `open 500/s`).
fn split_variant(variant: &str) -> (&str, &str) {
    variant.split_once(' ').unwrap_or((variant, ""))
}

/// An aligned table: the first `text_columns` columns left-aligned, the rest right-aligned.
fn render(headers: &[&str], rows: &[Vec<String>], text_columns: usize) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &width))| {
                if i < text_columns {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        parts.join("  ").trim_end().to_owned()
    };
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = line(&header);
    out.push('\n');
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&rule.join("  "));
    out.push('\n');
    for row in rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}
