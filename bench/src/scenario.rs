//! The scenario trait.

use std::future::Future;
use std::pin::Pin;

use crate::context::BenchContext;
use crate::report::Measurement;

/// One benchmark scenario. Implement this for a struct and add it to
/// [`crate::scenarios::registry`]; `run` may be written as an `async fn`.
pub trait Scenario: Send + Sync {
    /// The name used on the command line (`bench <name>`).
    fn name(&self) -> &'static str;
    /// One line for `bench list`.
    fn description(&self) -> &'static str;
    /// Set up, drive load (see [`crate::measure`]), clean up, and return one measurement
    /// per variant.
    fn run(
        &self,
        ctx: &BenchContext,
    ) -> impl Future<Output = anyhow::Result<Vec<Measurement>>> + Send;
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe form of [`Scenario`], implemented for every scenario, so the registry can
/// hold them as `Box<dyn DynScenario>`.
pub trait DynScenario: Send + Sync {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    fn run_boxed<'a>(
        &'a self,
        ctx: &'a BenchContext,
    ) -> BoxFuture<'a, anyhow::Result<Vec<Measurement>>>;
}

impl<S: Scenario> DynScenario for S {
    fn name(&self) -> &'static str {
        Scenario::name(self)
    }

    fn description(&self) -> &'static str {
        Scenario::description(self)
    }

    fn run_boxed<'a>(
        &'a self,
        ctx: &'a BenchContext,
    ) -> BoxFuture<'a, anyhow::Result<Vec<Measurement>>> {
        Box::pin(Scenario::run(self, ctx))
    }
}
