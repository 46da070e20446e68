//! `bench`: run benchmark scenarios against the local Postgres and NATS.
//!
//! `cargo bench-run list`, `cargo bench-run <scenario>`, `cargo bench-run all`;
//! see docs/benchmarks.md.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use bench::context::{DEFAULT_DATABASE_URL, DEFAULT_NATS_URL};
use bench::scenarios::registry;
use bench::{BenchContext, DynScenario, Measurement, report};
use clap::Parser;
use clap::builder::{PossibleValue, PossibleValuesParser};

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Benchmark scenarios for the journaling backend",
    after_help = "Run `bench list` for the scenarios. Results: a table on stdout per scenario \
                  (progress goes to stderr); with --json also one JSON object per line."
)]
struct Cli {
    /// A scenario name, `list` to list the scenarios, or `all` to run every scenario.
    #[arg(value_parser = scenario_parser())]
    scenario: String,

    /// Postgres to benchmark (the database is created if missing).
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    database_url: String,

    /// NATS server for scenarios that use it.
    #[arg(long, env = "NATS_URL", default_value = DEFAULT_NATS_URL)]
    nats_url: String,

    /// Seconds measured per variant (fractions allowed).
    #[arg(long, default_value = "10", value_parser = parse_seconds)]
    duration: Duration,

    /// Seconds of warmup per variant, discarded before measuring (fractions allowed).
    #[arg(long, default_value = "2", value_parser = parse_seconds)]
    warmup: Duration,

    /// Also print one JSON object per measurement (lines starting with `{`).
    #[arg(long)]
    json: bool,
}

fn scenario_parser() -> PossibleValuesParser {
    let mut values = vec![
        PossibleValue::new("list").help("List the scenarios"),
        PossibleValue::new("all").help("Run every scenario in turn"),
    ];
    values.extend(
        registry()
            .iter()
            .map(|s| PossibleValue::new(s.name()).help(s.description())),
    );
    PossibleValuesParser::new(values)
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !seconds.is_finite() || !(0.0..=86_400.0).contains(&seconds) {
        return Err(format!("`{text}` is not between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let scenarios = registry();

    if cli.scenario == "list" {
        let width = scenarios.iter().map(|s| s.name().len()).max().unwrap_or(0);
        for scenario in &scenarios {
            println!("{:<width$}  {}", scenario.name(), scenario.description());
        }
        return Ok(());
    }
    anyhow::ensure!(!cli.duration.is_zero(), "--duration must be positive");

    let selected: Vec<&dyn DynScenario> = if cli.scenario == "all" {
        scenarios.iter().map(|s| s.as_ref()).collect()
    } else {
        scenarios
            .iter()
            .filter(|s| s.name() == cli.scenario)
            .map(|s| s.as_ref())
            .collect()
    };
    anyhow::ensure!(
        !selected.is_empty(),
        "unknown scenario `{}` (try `bench list`)",
        cli.scenario
    );

    let ctx = BenchContext::new(cli.database_url, cli.nats_url, cli.duration, cli.warmup);
    let mut failed = Vec::new();
    for scenario in selected {
        eprintln!("== {}: {}", scenario.name(), scenario.description());
        match scenario.run_boxed(&ctx).await {
            Ok(measurements) => print_results(&measurements, cli.json)?,
            Err(error) => {
                eprintln!("{}: failed: {error:#}", scenario.name());
                failed.push(scenario.name());
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("scenario(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

fn print_results(measurements: &[Measurement], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out)?;
    write!(out, "{}", report::table(measurements))?;
    if json {
        for measurement in measurements {
            writeln!(out, "{}", measurement.to_json_line()?)?;
        }
    }
    out.flush().context("writing results")?;
    Ok(())
}
