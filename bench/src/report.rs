//! Results: one [`Measurement`] per scenario variant, printed as a table and JSON lines.

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
    let rows: Vec<[String; 9]> = measurements
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
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: &[String]| -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, width))| {
                if i < 2 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        parts.join("  ").trim_end().to_owned()
    };
    let header: Vec<String> = HEADERS.iter().map(|h| (*h).to_owned()).collect();
    let mut out = line(&header);
    out.push('\n');
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&rule.join("  "));
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}
