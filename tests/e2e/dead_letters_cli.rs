//! The operator command on the real `worker` binary: a message its handler cannot process is
//! dead-lettered; `worker dead-letters list` shows it; `worker dead-letters redrive <id>`
//! makes the running worker run the handler again (here it fails again, so the letter stays
//! with one more attempt counted and the new error).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use e2e_tests::ServiceProcess;
use messages::journal::v1::JournalEntryCreated;
use test_support::{TestDb, binary, eventually, nats_url};

fn cli(db: &TestDb, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(binary("worker"))
        .arg("dead-letters")
        .args(args)
        .env("DATABASE_URL", db.url())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn dead_letters_are_listed_and_redriven_through_the_operator_command() {
    let db = TestDb::new().await;
    let namespace = e2e_tests::unique_namespace();
    let worker = ServiceProcess::start("worker", db.url(), &namespace, &[]).await;

    let client = platform::nats::connect(&nats_url(), "dead-letter-test")
        .await
        .unwrap();
    let bus = bus::Bus::start(async_nats::jetstream::new(client), &namespace, "test")
        .await
        .unwrap();
    let poison = JournalEntryCreated {
        journal_entry_id: "not-a-uuid".into(),
        author_user_id: "also-not".into(),
        team_id: String::new(),
        created_at_ms: 0,
        ..Default::default()
    };
    bus.publish(&poison, "poison-1").await.unwrap();

    let listed = eventually(Duration::from_secs(20), || async {
        cli(&db, &["list"]).1.contains("1 dead letter(s)")
    })
    .await;
    assert!(listed, "the worker never dead-lettered the poison message");
    let (code, json_lines, _) = cli(&db, &["list", "--json"]);
    assert_eq!(code, 0);
    let letter: serde_json::Value =
        serde_json::from_str(json_lines.lines().next().unwrap()).unwrap();
    assert_eq!(letter["handler"], "worker--journal_entry_created");
    assert_eq!(letter["message_id"], "poison-1");
    assert_eq!(letter["attempts"], 1, "a permanent failure is not retried");
    assert!(
        letter["last_error"]
            .as_str()
            .unwrap()
            .contains("not a uuid"),
        "{letter}"
    );
    let dead_letter_id = letter["dead_letter_id"].as_str().unwrap().to_owned();

    // Bad input to the command: a clear error and exit 2.
    let (code, _, stderr) = cli(&db, &["redrive", "nonsense"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not a dead_letter_id"), "{stderr}");

    let (code, stdout, stderr) = cli(&db, &["redrive", &dead_letter_id]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("re-drive requested for 1"), "{stdout}");
    let redriven = eventually(Duration::from_secs(20), || async {
        let (_, lines, _) = cli(&db, &["list", "--json"]);
        lines
            .lines()
            .next()
            .and_then(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .is_some_and(|letter| {
                letter["attempts"] == 2 && letter["redrive_requested_at"].is_null()
            })
    })
    .await;
    assert!(
        redriven,
        "the running worker did not re-run the dead letter"
    );

    worker.stop().await;
    e2e_tests::delete_namespace(&nats_url(), &namespace).await;
}
