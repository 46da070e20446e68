//! Benchmark harness for the journaling backend.
//!
//! * [`scenario`] — the [`Scenario`] trait; [`scenarios::registry`] lists every scenario.
//! * [`measure`] — load drivers: [`ClosedLoop`] (N tasks back to back) and [`OpenLoop`]
//!   (a fixed-rate timetable, latency measured from the scheduled time).
//! * [`report`] — [`Measurement`], the human table and the JSON lines.
//! * [`context`] / [`db`] — connection settings and Postgres helpers shared by scenarios.
//!
//! To add a scenario: write a struct implementing [`Scenario`] in `src/scenarios/`, and add
//! one line for it to [`scenarios::registry`].

pub mod context;
pub mod db;
pub mod measure;
pub mod report;
pub mod scenario;
pub mod scenarios;

pub use context::BenchContext;
pub use measure::{ClosedLoop, LoadResult, OpInfo, OpenLoop};
pub use report::Measurement;
pub use scenario::{DynScenario, Scenario};
