//! The real binaries as processes: configuration errors name the variable and exit non-zero;
//! SIGTERM stops a running service with exit code 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use test_support::{ChildGuard, TestDb, binary, free_port, get, nats_url};

const BINARIES: [&str; 5] = ["api", "sync-streamer", "worker", "cron", "notifier"];

#[test]
fn invalid_configuration_names_each_variable_and_exits_2() {
    for name in BINARIES {
        let output = Command::new(binary(name))
            .env("PORT", "eighty")
            .env("LOG_FORMAT", "xml")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains("PORT: `eighty` is invalid"),
            "{name}: {stderr}"
        );
        assert!(stderr.contains("LOG_FORMAT"), "{name}: {stderr}");
    }
}

/// Issue 15: with the built-in development secret (or a manifest placeholder) anyone can sign
/// a sync token for any user, so outside development neither the api nor the streamer starts.
#[test]
fn the_development_sync_token_secret_is_refused_in_production_with_exit_2() {
    for name in ["api", "sync-streamer"] {
        for secret in [None, Some("REPLACE_ME_WITH_32_OR_MORE_RANDOM_BYTES")] {
            let mut command = Command::new(binary(name));
            command
                .env("ENVIRONMENT", "production")
                .env("PORT", free_port().to_string())
                .env_remove("SYNC_TOKEN_SECRET");
            if let Some(secret) = secret {
                command.env("SYNC_TOKEN_SECRET", secret);
            }
            let output = command.output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{name} {secret:?}: {stderr}");
            assert!(
                stderr.contains("SYNC_TOKEN_SECRET"),
                "{name} {secret:?}: {stderr}"
            );
            assert!(!stderr.contains("REPLACE_ME"), "the value is not echoed");
        }
    }
}

/// The binaries the end-to-end tests run are built from the current sources: none is older
/// than a file its dep-info (`target/<profile>/<name>.d`, written by cargo) lists.
#[test]
fn the_binaries_under_test_are_newer_than_their_sources() {
    for name in BINARIES {
        let path = binary(name);
        let built = std::fs::metadata(&path).unwrap().modified().unwrap();
        let dep_info = std::fs::read_to_string(path.with_extension("d")).unwrap();
        let (_, sources) = dep_info.split_once(": ").unwrap();
        let mut checked = 0;
        for source in sources.split_whitespace() {
            let Ok(metadata) = std::fs::metadata(source) else {
                continue; // generated files of an earlier build
            };
            checked += 1;
            assert!(
                metadata.modified().unwrap() <= built,
                "{} is older than its source {source}",
                path.display()
            );
        }
        assert!(
            checked > 10,
            "{name}: only {checked} sources in its dep-info"
        );
    }
}

/// In production the notifier without a SuprSend key would record every notification as
/// `skipped` and send none: it refuses to start instead.
#[test]
fn the_notifier_refuses_production_without_a_suprsend_key() {
    let output = Command::new(binary("notifier"))
        .env("ENVIRONMENT", "production")
        .env_remove("SUPRSEND_API_KEY")
        .env("PORT", free_port().to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SUPRSEND_API_KEY"), "{stderr}");
}

#[test]
fn unreachable_database_fails_start_with_exit_1() {
    let output = Command::new(binary("worker"))
        .env("PORT", free_port().to_string())
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{}/nothing", free_port()),
        )
        .env("LOG_FORMAT", "json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("postgres"),
        "the failure names postgres: {stdout}"
    );
}

#[tokio::test]
async fn sigterm_stops_every_service_with_exit_0() {
    let db = TestDb::new().await;
    let namespace = e2e_tests::unique_namespace();
    for name in BINARIES {
        let port = free_port();
        let mut child = ChildGuard::new(
            Command::new(binary(name))
                .env("PORT", port.to_string())
                .env("HOST", "127.0.0.1")
                .env("DATABASE_URL", db.url())
                .env("NATS_URL", nats_url())
                .env("BUS_NAMESPACE", &namespace)
                .env("LOG_FORMAT", "json")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let ready_url = format!("http://127.0.0.1:{port}/readyz");
        let ready = test_support::eventually(Duration::from_secs(30), || {
            let url = ready_url.clone();
            async move { get(&url).await.0 == 200 }
        })
        .await;
        assert!(ready, "{name} never became ready");

        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not exit within 15 s of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status.code(), Some(0), "{name} exit status after SIGTERM");
        assert_eq!(
            get(&ready_url).await.0,
            0,
            "{name} still answers after exit"
        );
    }
}
