//! NATS users: the accounts file, and each service publishing its own subjects only.

use std::time::Duration;

use platform::config::{NatsAuth, StreamSettings};

use crate::fixtures::{check_generated, secret};
use crate::nats_server::{AuthNats, password_of};

#[test]
fn the_nats_accounts_file_is_generated() {
    check_generated(
        "deploy/k8s/nats/accounts.conf",
        &bus::permissions::accounts_conf(),
    );
}

#[tokio::test]
async fn a_service_may_publish_its_own_subjects_only_and_needs_its_password() {
    let nats = AuthNats::start();

    // Right password: connects, creates the streams, publishes its own event.
    let worker = platform::nats::connect_with(&nats.url(), "worker", Some(&nats.auth("worker")))
        .await
        .unwrap();
    let mut jetstream = async_nats::jetstream::new(worker.clone());
    jetstream.set_timeout(Duration::from_secs(2));
    let bus = bus::Bus::start_with(jetstream.clone(), "", "worker", StreamSettings::default())
        .await
        .unwrap();
    platform::nats::ping(&jetstream, Duration::from_secs(2))
        .await
        .unwrap();
    bus.publish_raw(
        "events.export.ready",
        "export.ready",
        "x".into(),
        "own-1",
        &[],
    )
    .await
    .expect("the worker publishes its own event");

    // Another service's event: refused. JetStream never stores it; the publisher's ack
    // wait fails, and the server says why.
    let refused = bus
        .publish_raw(
            "events.user.created",
            "user.created",
            "x".into(),
            "foreign-1",
            &[],
        )
        .await;
    assert!(refused.is_err(), "the worker published the api's event");
    let (tx, mut server_errors) = tokio::sync::mpsc::unbounded_channel();
    let auth = nats.auth("worker");
    let observer = async_nats::ConnectOptions::new()
        .user_and_password(auth.user.clone(), password_of(&auth.user))
        .custom_inbox_prefix(platform::nats::inbox_prefix(&auth.user))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = tx.send(error.to_string());
                }
            }
        })
        .connect(nats.url())
        .await
        .unwrap();
    observer
        .publish("tasks.api.roll_over_usage", "x".into())
        .await
        .unwrap();
    observer.flush().await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), server_errors.recv())
        .await
        .expect("the server reports the refused publish")
        .unwrap();
    assert!(
        error.contains("Permissions Violation") && error.contains("tasks.api.roll_over_usage"),
        "{error}"
    );
    // Nor may it read another service's inbox.
    let sneaky = observer.subscribe("_INBOX_journal_api.>").await.unwrap();
    drop(sneaky);
    let error = tokio::time::timeout(Duration::from_secs(5), server_errors.recv())
        .await
        .expect("the server reports the refused subscription")
        .unwrap();
    assert!(error.contains("Permissions Violation"), "{error}");

    let events = jetstream.get_stream("EVENTS").await.unwrap();
    let stored = events.cached_info().state.messages;
    assert_eq!(stored, 1, "only the worker's own event is in the stream");

    // Wrong password, no credentials: refused at connect with a clear error, no secret shown.
    let wrong = NatsAuth {
        user: "journal_worker".to_owned(),
        password: secret("not-the-password"),
    };
    let error = platform::nats::connect_with(&nats.url(), "worker", Some(&wrong))
        .await
        .expect_err("a wrong password is refused");
    let message = error.to_string();
    assert!(
        message.contains("authorization violation")
            && message.contains("journal_worker")
            && message.contains("NATS_PASSWORD")
            && !message.contains("not-the-password"),
        "{message}"
    );
    let error = platform::nats::connect(&nats.url(), "worker")
        .await
        .expect_err("no credentials are refused");
    assert!(error.to_string().contains("NATS_USER"), "{error}");
}
