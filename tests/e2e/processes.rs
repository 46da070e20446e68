//! The real binaries as processes: configuration errors name the variable and exit non-zero;
//! SIGTERM stops a running service with exit code 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use e2e_tests::ServiceProcess;
use test_support::{TestDb, binary, free_port, get};

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
        // `binary` already refused a stale build; this also proves the check compared
        // something (a dep-info that listed nothing would pass vacuously).
        let checked = test_support::sources_checked(&path)
            .unwrap_or_else(|problem| panic!("{}: {problem}", path.display()));
        assert!(
            checked > 10,
            "{name}: only {checked} sources in its dep-info"
        );
    }
}

/// The freshness check refuses what it should: a binary without dep-info, and one whose
/// listed source is newer than it.
#[test]
fn the_freshness_check_refuses_a_stale_or_unexplained_binary() {
    let dir = std::env::temp_dir().join(format!("freshness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake_binary = dir.join("service");
    std::fs::write(&fake_binary, b"built").unwrap();
    let problem = test_support::sources_checked(&fake_binary).unwrap_err();
    assert!(problem.contains("dep-info"), "{problem}");

    let source = dir.join("main.rs");
    std::fs::write(&source, b"fn main() {}").unwrap();
    std::fs::write(
        fake_binary.with_extension("d"),
        format!("{}: {}\n", fake_binary.display(), source.display()),
    )
    .unwrap();
    let built = std::fs::metadata(&fake_binary).unwrap().modified().unwrap();
    let file = std::fs::File::options().write(true).open(&source).unwrap();
    file.set_modified(built + std::time::Duration::from_secs(5))
        .unwrap();
    let problem = test_support::sources_checked(&fake_binary).unwrap_err();
    assert!(problem.contains("older than its source"), "{problem}");

    file.set_modified(built - std::time::Duration::from_secs(5))
        .unwrap();
    assert_eq!(test_support::sources_checked(&fake_binary), Ok(1));
    std::fs::remove_dir_all(&dir).unwrap();
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
        let service = ServiceProcess::start(name, db.url(), &namespace, &[]).await;
        let ready_url = format!("{}/readyz", service.base_url);
        service.stop().await;
        assert_eq!(
            get(&ready_url).await.0,
            0,
            "{name} still answers after exit"
        );
    }
}
