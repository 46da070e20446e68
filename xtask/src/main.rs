//! `cargo xtask <command>`: the developer commands (the original's `yarn dev`, `yarn db ...`,
//! `yarn test`). Run `cargo xtask --help` for the list.

mod db;
mod dev;
mod infra;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Developer commands for the journal backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system: Postgres and NATS (started or installed if needed) and all five
    /// services with readable, prefixed logs; once they are ready, seed the demo data through
    /// the api (idempotent; see seeds/README.md). Ctrl-C stops everything.
    Dev {
        /// Build and run in release mode.
        #[arg(long)]
        release: bool,
        /// Do not seed the demo data.
        #[arg(long)]
        no_seed: bool,
    },
    /// Run every test: makes sure Postgres and NATS are up, builds the binaries, then runs
    /// the workspace tests (cargo-nextest when installed, cargo test otherwise). Extra
    /// arguments go to the test runner, e.g. `cargo xtask test -- readiness`.
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Start (or install) the local Postgres, NATS and s3s-fs the system needs, then exit.
    Infra,
    /// Generate the oRPC contract's TypeScript package (`clients/contract`: zod schemas and an
    /// `@orpc/contract` router) from the api's Rust types; commit the result.
    Contract,
    /// Database commands.
    Db {
        #[command(subcommand)]
        command: db::DbCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("xtask: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev { release, no_seed } => dev::run(release, !no_seed).await,
            Command::Test { args } => test::run(args).await,
            Command::Infra => infra::ensure().await.map(|_| ()),
            Command::Contract => {
                xtask::contract::write(&repo_root().join("clients/contract")).map(|written| {
                    for path in written {
                        println!("wrote clients/contract/{path}");
                    }
                })
            }
            Command::Db { command } => db::run(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
