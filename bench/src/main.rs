//! `bench`: run benchmark scenarios against the local Postgres and NATS.
//!
//! `cargo bench-run list`, `cargo bench-run <scenario>`, `cargo bench-run all`;
//! see docs/benchmarks.md.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use bench::context::{DEFAULT_DATABASE_URL, DEFAULT_NATS_URL, SystemOptions};
use bench::scenarios::registry;
use bench::{BenchContext, DynScenario, Measurement, report};
use clap::Parser;
use clap::builder::{PossibleValue, PossibleValuesParser};

/// `--duration`'s default.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

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

    /// Seconds measured per variant (fractions allowed); default 10 (system-create: 15).
    #[arg(long, value_parser = parse_seconds)]
    duration: Option<Duration>,

    /// Seconds of warmup per variant, discarded before measuring (fractions allowed).
    #[arg(long, default_value = "2", value_parser = parse_seconds)]
    warmup: Duration,

    /// Also print one JSON object per measurement (lines starting with `{`).
    #[arg(long)]
    json: bool,

    /// system-create: open-loop rates, creates/s, comma-separated (default 500,1000,2000,4000,6000;
    /// `none` for no open-loop run).
    #[arg(long, value_parser = parse_rates)]
    rates: Option<Rates>,

    /// system-create: connections of the closed-loop run (default 64; 0 skips it).
    #[arg(long)]
    closed_connections: Option<usize>,

    /// system-create: variants, comma-separated (default many-users,one-user).
    #[arg(long, value_delimiter = ',', value_parser = ["many-users", "one-user"])]
    variants: Option<Vec<String>>,

    /// system-create: users of the many-users variant (default 200).
    #[arg(long)]
    users: Option<usize>,

    /// system-create: directory of the five release service binaries (default: the directory
    /// of this bench binary, i.e. the cargo target dir's `release/`).
    #[arg(long)]
    bin_dir: Option<std::path::PathBuf>,

    /// system-create: seconds to wait after each run for the backlog to drain (default 30).
    #[arg(long, value_parser = parse_seconds)]
    drain_timeout: Option<Duration>,
}

/// `--rates`' value (a newtype so clap does not take the `Vec` for a repeated option).
#[derive(Debug, Clone)]
struct Rates(Vec<f64>);

fn parse_rates(text: &str) -> Result<Rates, String> {
    if text == "none" {
        return Ok(Rates(Vec::new()));
    }
    text.split(',')
        .map(|rate| {
            let rate = rate.trim();
            match rate.parse::<f64>() {
                Ok(value) if value.is_finite() && value > 0.0 => Ok(value),
                _ => Err(format!("`{rate}` is not a positive rate per second")),
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Rates)
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
    if let Some(duration) = cli.duration {
        anyhow::ensure!(!duration.is_zero(), "--duration must be positive");
    }

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

    let mut ctx = BenchContext::new(
        cli.database_url,
        cli.nats_url,
        cli.duration.unwrap_or(DEFAULT_DURATION),
        cli.warmup,
    );
    ctx.duration_given = cli.duration.is_some();
    ctx.system = SystemOptions {
        rates: cli.rates.map(|rates| rates.0),
        closed_connections: cli.closed_connections,
        variants: cli.variants,
        users: cli.users,
        bin_dir: cli.bin_dir,
        drain_timeout: cli.drain_timeout,
    };
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
    if measurements.iter().any(|m| m.system.is_some()) {
        writeln!(out)?;
        write!(out, "{}", report::system_table(measurements))?;
        writeln!(out)?;
        write!(out, "{}", report::cpu_table(measurements))?;
    }
    if json {
        for measurement in measurements {
            writeln!(out, "{}", measurement.to_json_line()?)?;
        }
    }
    out.flush().context("writing results")?;
    Ok(())
}
