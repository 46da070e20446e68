//! NATS with JetStream: use it if it answers, else start or install it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{apt_install, have, is_local, port_open, wait_port};

use crate::repo_root;

pub(super) async fn ensure_nats(nats_url: &str) -> Result<()> {
    let address = nats_url.trim_start_matches("nats://");
    let address = address.rsplit('@').next().unwrap_or(address);
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) => (
            host.to_owned(),
            port.parse::<u16>().context("NATS_URL port")?,
        ),
        None => (address.to_owned(), 4222),
    };
    if !port_open(&host, port) {
        if !is_local(&host) {
            bail!("NATS at {host}:{port} does not answer (NATS_URL points there)");
        }
        if !have("nats-server") && !Path::new("/usr/sbin/nats-server").exists() {
            eprintln!("xtask: nats-server is not installed; installing Debian's `nats-server`");
            if !apt_install(&["nats-server"])? {
                bail!(
                    "nats-server is not installed and cannot be installed automatically.\n  \
                     Install NATS 2.9 or newer (Debian: `sudo apt-get install nats-server`),\n  \
                     or run `docker compose up postgres nats`."
                );
            }
        }
        start_nats(&host, port)?;
    }
    let client = platform::nats::connect(nats_url, "xtask").await?;
    let jetstream = async_nats::jetstream::new(client);
    platform::nats::ping(&jetstream, Duration::from_secs(5)).await.map_err(|error| {
        anyhow::anyhow!("NATS at {nats_url} answers but JetStream does not ({error}); start nats-server with -js")
    })?;
    Ok(())
}

fn start_nats(host: &str, port: u16) -> Result<()> {
    let program = if have("nats-server") {
        "nats-server".to_owned()
    } else {
        "/usr/sbin/nats-server".to_owned()
    };
    let dev_dir = repo_root().join(".dev");
    let store = dev_dir.join("nats");
    std::fs::create_dir_all(&store)?;
    let log = dev_dir.join("nats.log");
    eprintln!(
        "xtask: starting nats-server -js on {host}:{port} (store {}, log {})",
        store.display(),
        log.display()
    );
    // `setsid` detaches it from our terminal so Ctrl-C on the dev stack leaves it running,
    // like the Postgres cluster.
    let mut command = Command::new("setsid");
    command
        .arg(program)
        .args(["-a", host, "-p", &port.to_string(), "-js", "-sd"])
        .arg(&store)
        .arg("-l")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command.spawn().context("could not start nats-server")?;
    if !wait_port(host, port, Duration::from_secs(15)) {
        bail!(
            "nats-server did not start listening on {host}:{port}; see {}",
            log.display()
        );
    }
    Ok(())
}
