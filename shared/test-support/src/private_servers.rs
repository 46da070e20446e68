//! NATS and Postgres servers owned by a single test, restartable on the same port.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Ports tests reserve: below Linux's ephemeral range (32768-60999 by default), so the kernel
/// never hands one of them to a `bind(0)` or an outgoing connection of a parallel test.
const RESERVED_PORTS: std::ops::Range<u16> = 20_000..30_000;

/// The lock files of the ports this process reserved, held until it exits.
static RESERVATIONS: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A TCP port nothing listens on now, reserved for this test process until it exits: the
/// port is outside the ephemeral range and holds a file lock (`flock`, released by the kernel
/// when the process ends) that every other test process respects. A server may therefore stop
/// and re-bind it later without a parallel test taking it in between.
pub fn free_port() -> u16 {
    let dir = std::env::temp_dir().join("journal-test-ports");
    std::fs::create_dir_all(&dir).unwrap();
    let span = u32::from(RESERVED_PORTS.end - RESERVED_PORTS.start);
    let start = uuid::Uuid::new_v4().as_u128() as u32 % span;
    for offset in 0..span {
        let port = RESERVED_PORTS.start + ((start + offset) % span) as u16;
        let Ok(lock) = File::create(dir.join(format!("{port}.lock"))) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue; // another test process holds it
        }
        // Something outside the tests (a dev server) may listen there.
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        RESERVATIONS.lock().unwrap().push(lock);
        return port;
    }
    panic!("no free port left in {RESERVED_PORTS:?}");
}

fn wait_for_port(port: u16, up: bool, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let open = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if open == up {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "port {port} did not become {}",
        if up { "open" } else { "closed" }
    );
}

fn find_program(name: &str, candidates: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.exists())
    }) {
        return path;
    }
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("{name} not found on PATH or in {candidates:?}"))
}

/// A `nats-server -js` process on its own port and store directory.
pub struct PrivateNats {
    port: u16,
    store: TempDir,
    child: Option<Child>,
}

impl PrivateNats {
    pub fn start() -> Self {
        let mut nats = Self {
            port: free_port(),
            store: TempDir::new().unwrap(),
            child: None,
        };
        nats.resume();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kill the server (connections drop at once).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        wait_for_port(self.port, false, Duration::from_secs(10));
    }

    /// Start the server again on the same port with the same store.
    pub fn resume(&mut self) {
        let program = find_program(
            "nats-server",
            &["/usr/sbin/nats-server", "/usr/local/bin/nats-server"],
        );
        let child = Command::new(program)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_port(self.port, true, Duration::from_secs(10));
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Postgres cluster made with `initdb` in a temporary directory. As root, the server runs
/// as the `postgres` user (Postgres refuses to run as root).
pub struct PrivatePostgres {
    port: u16,
    dir: TempDir,
    bin_dir: PathBuf,
    as_postgres_user: bool,
    /// `-c name=value` settings beyond the defaults below.
    settings: Vec<String>,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Start with extra server settings, e.g. `["wal_level=logical"]`.
    pub fn start_with(settings: &[&str]) -> Self {
        let bin_dir = postgres_bin_dir();
        let dir = TempDir::new().unwrap();
        let as_postgres_user = nix_is_root();
        if as_postgres_user {
            let status = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of the private postgres dir failed");
        }
        let mut postgres = Self {
            port: free_port(),
            dir,
            bin_dir,
            as_postgres_user,
            settings: settings
                .iter()
                .map(|setting| (*setting).to_owned())
                .collect(),
        };
        let data = postgres.data_dir();
        let status = postgres
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed");
        postgres.resume();
        postgres
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let program = self.bin_dir.join(tool);
        if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// A URL to the `postgres` database of this server.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stop immediately (connections drop, as in a crash or restart).
    pub fn stop(&mut self) {
        let status = self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl stop failed");
        wait_for_port(self.port, false, Duration::from_secs(10));
    }

    /// Start the server (again) on the same port and data directory.
    pub fn resume(&mut self) {
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        for setting in &self.settings {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        let log = self.dir.path().join("postgres.log");
        let status = self
            .command("pg_ctl")
            .args(["start", "-w", "-t", "30", "-o", &options, "-l"])
            .arg(&log)
            .arg("-D")
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "pg_ctl start failed; see {}",
            log.display()
        );
        wait_for_port(self.port, true, Duration::from_secs(30));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Debian keeps server binaries in /usr/lib/postgresql/<version>/bin; take the newest.
fn postgres_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("POSTGRES_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| {
                    let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
                    let bin = entry.path().join("bin");
                    bin.join("initdb").exists().then_some((version, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries under {}; set POSTGRES_BIN_DIR",
            root.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The old `free_port` bound port 0 and let go: the kernel could give the same port to
    /// any parallel bind before the server re-bound it.
    #[test]
    fn free_ports_are_outside_the_ephemeral_range_and_locked() {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let bounds: Vec<u16> = range
            .split_whitespace()
            .map(|bound| bound.parse().unwrap())
            .collect();
        let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
        for port in &ports {
            assert!(
                *port < bounds[0] || *port > bounds[1],
                "port {port} is in the ephemeral range {bounds:?}"
            );
            // Another process (a new open file description) cannot take the reservation.
            let lock = File::open(
                std::env::temp_dir()
                    .join("journal-test-ports")
                    .join(format!("{port}.lock")),
            )
            .unwrap();
            assert!(lock.try_lock().is_err(), "port {port} is not locked");
        }
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
    }
}
