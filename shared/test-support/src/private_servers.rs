//! NATS and Postgres servers owned by a single test, restartable on the same port.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
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
}

impl PrivatePostgres {
    pub fn start() -> Self {
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
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
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
