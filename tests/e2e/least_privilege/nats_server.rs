//! A NATS server of the test's own with the checked-in accounts file.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use platform::config::NatsAuth;
use test_support::{ChildGuard, free_port};

use crate::fixtures::{repo_root, role, secret};

/// A `nats-server -js` of this test's own, with the checked-in accounts file and a password
/// per service user in its environment.
pub(crate) struct AuthNats {
    pub(crate) port: u16,
    pub(crate) log: PathBuf,
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) _child: ChildGuard,
}

pub(crate) fn password_of(user: &str) -> String {
    format!("test-password-of-{user}")
}

impl AuthNats {
    pub(crate) fn start() -> Self {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::copy(
            repo_root().join("deploy/k8s/nats/accounts.conf"),
            dir.path().join("accounts.conf"),
        )
        .unwrap();
        let port = free_port();
        let store = dir.path().join("store");
        let config = dir.path().join("server.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\ninclude ./accounts.conf\n",
                store.display()
            ),
        )
        .unwrap();
        let log = dir.path().join("nats.log");
        let program = ["/usr/sbin/nats-server", "/usr/local/bin/nats-server"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
            .unwrap_or_else(|| PathBuf::from("nats-server"));
        let mut command = Command::new(program);
        command
            .arg("-c")
            .arg(&config)
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for permissions in bus::permissions::service_permissions() {
            command.env(
                bus::permissions::password_variable(permissions.user),
                password_of(permissions.user),
            );
        }
        let child = ChildGuard::new(command.spawn().unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server with accounts.conf did not start; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            port,
            log,
            _dir: dir,
            _child: child,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub(crate) fn auth(&self, service: &str) -> NatsAuth {
        let user = role(service).role;
        NatsAuth {
            user: user.to_owned(),
            password: secret(&password_of(user)),
        }
    }

    /// The server's log lines about refused publishes or subscriptions.
    pub(crate) fn violations(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            // `[ERR] … - Publish Violation - User "journal_worker", Subject "…"`
            .filter(|line| line.contains(" Violation - User "))
            .map(str::to_owned)
            .collect()
    }
}
