//! `cargo xtask dev`: the whole system on this machine, one command, Ctrl-C stops it.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{infra, repo_root};

pub const SERVICE_BINARIES: [&str; 5] = ["api", "sync-streamer", "worker", "cron", "notifier"];

/// (binary, port, terminal colour)
const SERVICES: [(&str, u16, &str); 5] = [
    ("api", 8080, "32"),
    ("sync-streamer", 8081, "36"),
    ("worker", 8082, "33"),
    ("cron", 8083, "35"),
    ("notifier", 8084, "34"),
];

/// Where `cargo xtask dev` runs the api.
pub const API_URL: &str = "http://127.0.0.1:8080";

pub async fn run(release: bool, seed: bool) -> Result<()> {
    let endpoints = infra::ensure().await?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = std::process::Command::new(&cargo);
    build.arg("build").current_dir(repo_root());
    for (name, _, _) in SERVICES {
        build.args(["--package", name]);
    }
    if release {
        build.arg("--release");
    }
    if !build.status().context("running cargo build")?.success() {
        bail!("build failed");
    }
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    let profile_dir = target_dir.join(if release { "release" } else { "debug" });

    let mut children: Vec<(&str, Child)> = Vec::new();
    for (name, port, colour) in SERVICES {
        let mut command = Command::new(profile_dir.join(name));
        command
            .env("PORT", port.to_string())
            // Each service logs in as its own role (docs/operations.md, "Database roles").
            .env(
                "DATABASE_URL",
                infra::service_database_url(&endpoints.database_url, name)?,
            )
            .env("NATS_URL", &endpoints.nats_url)
            .env(
                "LOG_FORMAT",
                std::env::var("LOG_FORMAT").unwrap_or_else(|_| "pretty".to_owned()),
            )
            .env(
                "AUTH_DEV_LOGIN",
                std::env::var("AUTH_DEV_LOGIN").unwrap_or_else(|_| "true".to_owned()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let prefix = format!("\x1b[{colour}m{name:>13} |\x1b[0m");
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(prefix_lines(prefix.clone(), stdout));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(prefix_lines(prefix, stderr));
        }
        children.push((name, child));
    }

    let all_ready = wait_until_ready().await;
    if all_ready {
        println!("\n\x1b[1mAll five services are ready.\x1b[0m");
        for (name, port, _) in SERVICES {
            println!("  {name:>13}  http://127.0.0.1:{port}  (/healthz /readyz /metrics)");
        }
        println!(
            "  Postgres {} (each service as its role journal_<service>)  NATS {}",
            redact(&endpoints.database_url),
            endpoints.nats_url
        );
        if seed {
            // Through the api's own procedures, so the demo data syncs and reaches the worker.
            match demo_seed::seed(&reqwest::Client::new(), API_URL).await {
                Ok(seeded) => println!(
                    "Demo data: sign in with the dev login as {} (or {}); {} row(s) created now \
                     (seeds/README.md).",
                    demo_seed::DEMO_EMAIL,
                    demo_seed::MEMBER_EMAIL,
                    seeded.created
                ),
                Err(error) => eprintln!("xtask: seeding the demo data failed: {error}"),
            }
        }
        println!("Press Ctrl-C to stop everything.\n");
    } else {
        eprintln!("xtask: not every service became ready within 60 s; see the logs above");
    }

    // Wait for Ctrl-C, or for any service to exit on its own (then stop the rest).
    let exited = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        name = first_exit(&mut children) => Some(name),
    };
    if let Some(name) = exited {
        eprintln!("xtask: {name} exited; stopping the others");
    }
    stop_all(&mut children).await;
    match exited {
        Some(name) => bail!("{name} exited unexpectedly"),
        None => Ok(()),
    }
}

async fn prefix_lines(prefix: String, stream: impl tokio::io::AsyncRead + Unpin) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("{prefix} {line}");
    }
}

async fn wait_until_ready() -> bool {
    let client = reqwest::Client::new();
    for _ in 0..120 {
        let mut ready = 0;
        for (_, port, _) in SERVICES {
            let url = format!("http://127.0.0.1:{port}/readyz");
            let response = client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if response.is_ok_and(|response| response.status().is_success()) {
                ready += 1;
            }
        }
        if ready == SERVICES.len() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

async fn first_exit(children: &mut [(&'static str, Child)]) -> &'static str {
    loop {
        for (name, child) in children.iter_mut() {
            if let Ok(Some(_)) = child.try_wait() {
                return name;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn stop_all(children: &mut [(&'static str, Child)]) {
    for (_, child) in children.iter() {
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    for (name, child) in children.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
            Ok(Ok(status)) => eprintln!("xtask: {name} stopped ({status})"),
            _ => {
                eprintln!("xtask: {name} did not stop in time; killing it");
                let _ = child.kill().await;
            }
        }
    }
}

pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}<credentials>{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
