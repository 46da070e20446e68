//! Load drivers and latency bookkeeping.
//!
//! Two ways to drive load:
//!
//! * [`ClosedLoop`]: `concurrency` tasks, each issuing its next operation as soon as the
//!   previous one finished. Measures the maximum throughput at that concurrency and the
//!   service time of each operation. An operation counts if it *completes* inside the
//!   measured window; throughput is those completions divided by the window.
//! * [`OpenLoop`]: operations are issued on a fixed timetable (`rate` per second) whatever
//!   the system does, and each operation's latency is measured from its *scheduled* start,
//!   not from when it actually started. A stall therefore shows up in the latency of every
//!   operation that should have run during it, which a closed loop would hide by simply not
//!   issuing them ("coordinated omission"). An operation counts if it was *scheduled* inside
//!   the measured window.
//!
//! Both run `warmup` first (samples discarded), then `duration` of measurement, and
//! record latencies in microseconds into an HDR histogram (3 significant digits).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::context::BenchContext;

/// Highest latency the histograms track exactly (1 hour, in microseconds); larger values
/// are clamped to it.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;
const HISTOGRAM_SIGFIGS: u8 = 3;

/// Identifies one operation handed to a scenario's operation closure.
#[derive(Debug, Clone, Copy)]
pub struct OpInfo {
    /// Closed loop: the worker task (0..concurrency). Open loop: always 0.
    pub worker: usize,
    /// Unique per run, increasing from 0 (open loop: the timetable slot).
    pub seq: u64,
}

/// Which driver produced a [`LoadResult`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    Closed,
    Open,
}

/// The merged outcome of one driver run (the measured window only).
#[derive(Debug)]
pub struct LoadResult {
    pub mode: LoadMode,
    /// Closed loop: worker tasks. Open loop: the cap on operations in flight.
    pub concurrency: usize,
    /// Open loop only: operations per second asked for.
    pub target_rate: Option<f64>,
    /// Length of the measured window.
    pub window: Duration,
    pub warmup: Duration,
    /// Latency of every successful operation, in microseconds.
    pub histogram: Histogram<u64>,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations (open loop: including those still unfinished after the drain).
    pub errors: u64,
    /// The first error seen, for diagnosis.
    pub first_error: Option<String>,
}

impl LoadResult {
    /// Successful operations per second over the measured window.
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency at `quantile` (0.0..=1.0) in milliseconds; 0 when nothing succeeded.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        if self.histogram.is_empty() {
            return 0.0;
        }
        self.histogram.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        if self.histogram.is_empty() {
            return 0.0;
        }
        self.histogram.max() as f64 / 1000.0
    }

    pub fn mean_ms(&self) -> f64 {
        if self.histogram.is_empty() {
            return 0.0;
        }
        self.histogram.mean() / 1000.0
    }
}

/// Per-task tally, merged at the end.
struct Tally {
    histogram: Histogram<u64>,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            histogram: Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_SIGFIGS)
                .context("creating latency histogram")?,
            ops: 0,
            errors: 0,
            first_error: None,
        })
    }

    fn record(&mut self, latency: Duration, outcome: anyhow::Result<()>) {
        match outcome {
            Ok(()) => {
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.histogram.saturating_record(micros.max(1));
                self.ops += 1;
            }
            Err(error) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!("{error:#}"));
                }
            }
        }
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.histogram
            .add(&other.histogram)
            .context("merging latency histograms")?;
        self.ops += other.ops;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }
}

fn check_timings(warmup: Duration, duration: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(
        !duration.is_zero(),
        "the measured duration must be positive"
    );
    // Instant arithmetic must not overflow; a day is far beyond any sensible run.
    anyhow::ensure!(
        warmup + duration <= Duration::from_secs(86_400),
        "warmup + duration must be at most a day"
    );
    Ok(())
}

/// Closed-loop driver: `concurrency` tasks run operations back to back.
#[derive(Debug, Clone)]
pub struct ClosedLoop {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

impl ClosedLoop {
    /// A closed loop with the invocation's `--warmup` and `--duration`.
    pub fn new(ctx: &BenchContext, concurrency: usize) -> Self {
        Self {
            concurrency,
            warmup: ctx.warmup,
            duration: ctx.duration,
        }
    }

    /// Run `op` from `concurrency` tasks until warmup + duration have passed, and return the
    /// merged results of the operations that completed inside the measured window.
    /// Operations still running at the end are awaited but not counted.
    pub async fn run<F, Fut>(&self, op: F) -> anyhow::Result<LoadResult>
    where
        F: Fn(OpInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        anyhow::ensure!(self.concurrency > 0, "concurrency must be at least 1");
        check_timings(self.warmup, self.duration)?;
        let op = Arc::new(op);
        let next_seq = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let measure_from = start + self.warmup;
        let end = measure_from + self.duration;

        let mut workers = JoinSet::new();
        for worker in 0..self.concurrency {
            let op = Arc::clone(&op);
            let next_seq = Arc::clone(&next_seq);
            let mut tally = Tally::new()?;
            workers.spawn(async move {
                loop {
                    let began = Instant::now();
                    if began >= end {
                        break;
                    }
                    let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                    let outcome = op(OpInfo { worker, seq }).await;
                    let finished = Instant::now();
                    if finished >= measure_from && finished < end {
                        tally.record(finished - began, outcome);
                    }
                }
                tally
            });
        }

        let mut total = Tally::new()?;
        while let Some(joined) = workers.join_next().await {
            total.merge(joined.context("closed-loop worker task failed")?)?;
        }
        Ok(LoadResult {
            mode: LoadMode::Closed,
            concurrency: self.concurrency,
            target_rate: None,
            window: self.duration,
            warmup: self.warmup,
            histogram: total.histogram,
            ops: total.ops,
            errors: total.errors,
            first_error: total.first_error,
        })
    }
}

/// Open-loop driver: operations start on a fixed timetable, `rate` per second.
///
/// Operation `i` is scheduled at `start + i / rate`. The dispatcher sleeps until that time
/// (or, if it is behind, dispatches at once) and spawns the operation; latency is measured
/// from the scheduled time, so dispatcher lag, waiting for a free slot under `max_in_flight`
/// and the operation itself all count. When `max_in_flight` operations are running, the
/// dispatcher waits for one to finish; the operations it then issues late carry that wait in
/// their latency.
#[derive(Debug, Clone)]
pub struct OpenLoop {
    /// Operations per second.
    pub rate: f64,
    /// At most this many operations run at once (bounds memory and connections when the
    /// system cannot keep up).
    pub max_in_flight: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// After the timetable ends, how long to wait for operations still running; those not
    /// done by then are aborted and counted as errors.
    pub drain_timeout: Duration,
}

impl OpenLoop {
    /// An open loop with the invocation's `--warmup` and `--duration`, a 10 s drain.
    pub fn new(ctx: &BenchContext, rate: f64, max_in_flight: usize) -> Self {
        Self {
            rate,
            max_in_flight,
            warmup: ctx.warmup,
            duration: ctx.duration,
            drain_timeout: Duration::from_secs(10),
        }
    }

    /// Run `op` on the timetable and return the merged results of the operations scheduled
    /// inside the measured window.
    pub async fn run<F, Fut>(&self, op: F) -> anyhow::Result<LoadResult>
    where
        F: Fn(OpInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        anyhow::ensure!(
            self.rate.is_finite() && self.rate > 0.0,
            "rate must be a positive number of operations per second"
        );
        anyhow::ensure!(self.max_in_flight > 0, "max_in_flight must be at least 1");
        check_timings(self.warmup, self.duration)?;

        let slots = Arc::new(Semaphore::new(self.max_in_flight));
        let start = Instant::now();
        let measure_from = start + self.warmup;
        let end = measure_from + self.duration;

        // Each task reports whether it counts, its latency from the scheduled time, and
        // its outcome.
        let mut running: JoinSet<(bool, Duration, anyhow::Result<()>)> = JoinSet::new();
        let mut total = Tally::new()?;
        let mut dispatched_in_window: u64 = 0;
        let mut seq: u64 = 0;
        loop {
            // Computed from `start` each time so rounding does not accumulate.
            let scheduled = start + Duration::from_secs_f64(seq as f64 / self.rate);
            if scheduled >= end {
                break;
            }
            if scheduled > Instant::now() {
                tokio::time::sleep_until(scheduled).await;
            }
            let slot = Arc::clone(&slots)
                .acquire_owned()
                .await
                .context("open-loop semaphore closed")?;
            let counts = scheduled >= measure_from;
            if counts {
                dispatched_in_window += 1;
            }
            let operation = op(OpInfo { worker: 0, seq });
            running.spawn(async move {
                let outcome = operation.await;
                let latency = Instant::now().saturating_duration_since(scheduled);
                drop(slot);
                (counts, latency, outcome)
            });
            while let Some(joined) = running.try_join_next() {
                record_open(&mut total, joined)?;
            }
            seq += 1;
        }

        let deadline = end + self.drain_timeout;
        loop {
            match tokio::time::timeout_at(deadline, running.join_next()).await {
                Ok(Some(joined)) => record_open(&mut total, joined)?,
                Ok(None) => break,
                Err(_elapsed) => {
                    running.abort_all();
                    break;
                }
            }
        }
        // Whatever was dispatched in the window but never reported did not finish in time.
        let unfinished = dispatched_in_window.saturating_sub(total.ops + total.errors);
        if unfinished > 0 {
            total.errors += unfinished;
            if total.first_error.is_none() {
                total.first_error = Some(format!(
                    "{unfinished} operation(s) still running {} s after the timetable ended",
                    self.drain_timeout.as_secs_f64()
                ));
            }
        }

        Ok(LoadResult {
            mode: LoadMode::Open,
            concurrency: self.max_in_flight,
            target_rate: Some(self.rate),
            window: self.duration,
            warmup: self.warmup,
            histogram: total.histogram,
            ops: total.ops,
            errors: total.errors,
            first_error: total.first_error,
        })
    }
}

fn record_open(
    total: &mut Tally,
    joined: Result<(bool, Duration, anyhow::Result<()>), tokio::task::JoinError>,
) -> anyhow::Result<()> {
    let (counts, latency, outcome) = joined.context("open-loop operation task failed")?;
    if counts {
        total.record(latency, outcome);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WARMUP: Duration = Duration::from_millis(100);
    const WINDOW: Duration = Duration::from_millis(500);

    #[tokio::test]
    async fn closed_loop_counts_completions_in_window() -> anyhow::Result<()> {
        let driver = ClosedLoop {
            concurrency: 4,
            warmup: WARMUP,
            duration: WINDOW,
        };
        let result = driver
            .run(|_op| async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(())
            })
            .await?;
        // 4 tasks x ~10 ms per op over 0.5 s: at most 200, and timers only add delay.
        assert!(
            result.ops > 100 && result.ops <= 204,
            "ops = {}",
            result.ops
        );
        assert_eq!(result.errors, 0);
        assert!(result.quantile_ms(0.5) >= 10.0);
        Ok(())
    }

    #[tokio::test]
    async fn closed_loop_counts_errors() -> anyhow::Result<()> {
        let driver = ClosedLoop {
            concurrency: 2,
            warmup: WARMUP,
            duration: WINDOW,
        };
        let result = driver
            .run(|op| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if op.seq % 2 == 0 {
                    anyhow::bail!("even op {}", op.seq)
                }
                Ok(())
            })
            .await?;
        assert!(result.errors > 0 && result.ops > 0);
        assert!(result.first_error.is_some());
        Ok(())
    }

    #[tokio::test]
    async fn open_loop_keeps_the_rate() -> anyhow::Result<()> {
        let driver = OpenLoop {
            rate: 200.0,
            max_in_flight: 16,
            warmup: WARMUP,
            duration: WINDOW,
            drain_timeout: Duration::from_secs(1),
        };
        let result = driver
            .run(|_op| async {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok(())
            })
            .await?;
        // 200/s over 0.5 s is 100 scheduled operations in the window.
        assert_eq!(result.ops + result.errors, 100);
        assert_eq!(result.errors, 0);
        Ok(())
    }

    #[tokio::test]
    async fn open_loop_measures_from_the_scheduled_time() -> anyhow::Result<()> {
        // One slot, ops take 20 ms, but one is scheduled every 10 ms: the backlog grows,
        // and latency from the scheduled time must grow with it (no coordinated omission).
        let driver = OpenLoop {
            rate: 100.0,
            max_in_flight: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(300),
            drain_timeout: Duration::from_secs(5),
        };
        let result = driver
            .run(|_op| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(())
            })
            .await?;
        assert_eq!(result.ops, 30);
        // The last op is scheduled at 290 ms and finishes at about 30 * 20 = 600 ms.
        assert!(result.max_ms() >= 250.0, "max = {} ms", result.max_ms());
        Ok(())
    }
}
