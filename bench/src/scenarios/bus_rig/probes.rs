//! The probes an operation waits on: the no-op handler hands each its moment, and the phase
//! histograms of the measured window.

use std::collections::HashMap;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;

use bus::{HandlerError, Meta, Msg, State};
use hdrhistogram::Histogram;
use messages::journal::v1::BusProbe;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long one operation waits for its handler before it counts as an error.
pub const HANDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Latency histograms in microseconds, like the drivers'.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).context("creating histogram")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The time window whose samples count (the driver's measured window).
#[derive(Debug, Clone, Copy)]
struct Window {
    from: Instant,
    to: Instant,
}

/// Named latency histograms for the phases of an operation, recorded only inside the
/// measured window (set with [`Probes::measure`]).
pub struct Phases {
    names: Vec<&'static str>,
    histograms: Vec<Mutex<Histogram<u64>>>,
}

impl Phases {
    fn new(names: &[&'static str]) -> anyhow::Result<Self> {
        Ok(Self {
            names: names.to_vec(),
            histograms: names
                .iter()
                .map(|_| new_histogram().map(Mutex::new))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    fn record(&self, phase: usize, value: Duration) {
        if let Some(histogram) = self.histograms.get(phase) {
            lock(histogram).saturating_record(micros(value));
        }
    }

    fn reset(&self) {
        for histogram in &self.histograms {
            lock(histogram).reset();
        }
    }

    /// One line per phase: `name: p50 … p90 … p99 … max … (n samples)`.
    pub fn summary(&self) -> Vec<String> {
        let width = self.names.iter().map(|name| name.len()).max().unwrap_or(0);
        self.names
            .iter()
            .zip(&self.histograms)
            .map(|(name, histogram)| {
                let histogram = lock(histogram);
                if histogram.is_empty() {
                    return format!("{name:<width$}  no samples");
                }
                let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
                format!(
                    "{name:<width$}  p50 {:>8.3} ms  p90 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  mean {:>8.3} ms  ({} samples)",
                    ms(0.5),
                    ms(0.9),
                    ms(0.99),
                    histogram.max() as f64 / 1000.0,
                    histogram.mean() / 1000.0,
                    histogram.len()
                )
            })
            .collect()
    }
}

/// Probes waiting for their handler, and the phase histograms.
pub struct Probes {
    run_id: String,
    next_sequence: AtomicI64,
    waiting: Mutex<HashMap<i64, oneshot::Sender<Instant>>>,
    window: Mutex<Option<Window>>,
    pub phases: Phases,
}

/// Phase recorded by the handler itself: `Meta::emitted_at_micros` → handler (the bus's
/// own end-to-end figure: outbox insert time for relayed rows, publish time for direct
/// publishes). Always phase 0.
pub const EMITTED_TO_HANDLER: usize = 0;

impl Probes {
    /// `phases[0]` must be the handler's emitted→handler phase ([`EMITTED_TO_HANDLER`]).
    pub(super) fn new(run_id: String, phases: &[&'static str]) -> anyhow::Result<Self> {
        Ok(Self {
            run_id,
            next_sequence: AtomicI64::new(0),
            waiting: Mutex::new(HashMap::new()),
            window: Mutex::new(None),
            phases: Phases::new(phases)?,
        })
    }

    /// A fresh probe whose handler call this operation can wait for.
    pub fn register(self: &Arc<Self>) -> (BusProbe, Waiter) {
        let sequence = self.next_sequence.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        lock(&self.waiting).insert(sequence, sender);
        let probe = BusProbe {
            run_id: self.run_id.clone(),
            sequence,
            aggregate_key: String::new(),
        };
        let waiter = Waiter {
            probes: Arc::clone(self),
            sequence,
            receiver: Some(receiver),
        };
        (probe, waiter)
    }

    pub fn message_id(&self, sequence: i64) -> String {
        format!("{}-{sequence}", self.run_id)
    }

    /// Phase samples count from now on only inside `[from, from + duration)`; clears the
    /// histograms and any waiter left over from an earlier variant.
    pub fn measure(&self, from: Instant, duration: Duration) {
        *lock(&self.window) = Some(Window {
            from,
            to: from + duration,
        });
        self.phases.reset();
        lock(&self.waiting).clear();
    }

    /// Record `value` for `phase` if `at` lies in the measured window.
    pub fn record(&self, phase: usize, at: Instant, value: Duration) {
        let in_window =
            lock(&self.window).is_some_and(|window| at >= window.from && at < window.to);
        if in_window {
            self.phases.record(phase, value);
        }
    }

    /// Record an operation's legs after the handler's own phase, each at `resumed`:
    /// began → sent (phase 1), sent → handled (phase 2), handled → resumed (phase 3).
    pub fn record_legs(&self, began: Instant, sent: Instant, handled: Instant, resumed: Instant) {
        self.record(1, resumed, sent - began);
        self.record(2, resumed, handled.saturating_duration_since(sent));
        self.record(3, resumed, resumed.saturating_duration_since(handled));
    }

    pub fn waiting(&self) -> usize {
        lock(&self.waiting).len()
    }

    fn handled(&self, sequence: i64, at: Instant) {
        if let Some(sender) = lock(&self.waiting).remove(&sequence) {
            let _ = sender.send(at);
        }
    }
}

/// Waits for one probe's handler; forgets the probe if dropped unfinished.
pub struct Waiter {
    probes: Arc<Probes>,
    sequence: i64,
    receiver: Option<oneshot::Receiver<Instant>>,
}

impl Waiter {
    pub fn sequence(&self) -> i64 {
        self.sequence
    }

    /// When the handler ran, or an error after [`HANDLE_TIMEOUT`].
    pub async fn handled(mut self) -> anyhow::Result<Instant> {
        let receiver = self.receiver.take().context("probe already awaited")?;
        match tokio::time::timeout(HANDLE_TIMEOUT, receiver).await {
            Ok(Ok(at)) => Ok(at),
            Ok(Err(_)) => anyhow::bail!("probe {} was forgotten", self.sequence),
            Err(_) => anyhow::bail!(
                "probe {} not handled within {} s",
                self.sequence,
                HANDLE_TIMEOUT.as_secs()
            ),
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.receiver.is_some() {
            lock(&self.probes.waiting).remove(&self.sequence);
        }
    }
}

/// What one replica's handler reaches: the shared probes and its own count.
#[derive(Clone)]
pub(super) struct ReplicaState {
    pub(super) probes: Arc<Probes>,
    pub(super) handled: Arc<AtomicU64>,
}

/// The no-op handler: note when it ran and wake the waiting operation.
pub(super) async fn handle_probe(
    State(replica): State<ReplicaState>,
    Msg(probe): Msg<BusProbe>,
    meta: Meta,
) -> Result<(), HandlerError> {
    let now = Instant::now();
    let probes = &replica.probes;
    if probe.run_id != probes.run_id {
        return Ok(());
    }
    replica.handled.fetch_add(1, Ordering::Relaxed);
    if let Some(emitted) = meta.emitted_at_micros {
        let micros = bus::headers::now_micros().saturating_sub(emitted).max(0);
        probes.record(
            EMITTED_TO_HANDLER,
            now,
            Duration::from_micros(micros.unsigned_abs()),
        );
    }
    probes.handled(probe.sequence, now);
    Ok(())
}
