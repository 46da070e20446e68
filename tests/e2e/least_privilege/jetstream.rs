//! JetStream under the service users: what each may consume, and the streams' settings.

use std::time::Duration;

use platform::config::{StreamSettings, StreamStorage};
use serde_json::{Value, json};

use crate::nats_server::{AuthNats, password_of};

/// A JetStream API request as `service`, answered or not: `None` when the server refused the
/// publish (no answer comes; the server logs the violation), else the answer's JSON.
async fn jetstream_request(
    nats: &AuthNats,
    service: &str,
    subject: &str,
    body: Value,
) -> Option<Value> {
    let auth = nats.auth(service);
    let client = async_nats::ConnectOptions::new()
        .user_and_password(auth.user.clone(), password_of(&auth.user))
        .custom_inbox_prefix(platform::nats::inbox_prefix(&auth.user))
        .request_timeout(Some(Duration::from_secs(2)))
        .connect(nats.url())
        .await
        .unwrap();
    let answer = client
        .request(
            subject.to_owned(),
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .ok()?;
    Some(serde_json::from_slice(&answer.payload).unwrap())
}

/// A consumer of EVENTS as the JetStream API takes it: a durable one (as the bus router makes)
/// when `name` ends in `--…`, else an ephemeral (ordered-like) one.
fn consumer_config(name: &str, filter: &str) -> Value {
    let durable = name.contains("--").then_some(name);
    json!({
        "stream_name": "EVENTS",
        "config": {
            "name": name,
            "durable_name": durable,
            "filter_subject": filter,
            "ack_policy": "none",
            "deliver_policy": "all",
            "max_deliver": 1,
        },
        "action": "",
    })
}

#[tokio::test]
async fn a_service_may_consume_only_the_messages_it_handles() {
    let nats = AuthNats::start();
    // The api creates the streams, as at its start.
    let api = platform::nats::connect_with(&nats.url(), "api", Some(&nats.auth("api")))
        .await
        .unwrap();
    let mut jetstream = async_nats::jetstream::new(api);
    jetstream.set_timeout(Duration::from_secs(2));
    bus::Bus::start_with(jetstream.clone(), "", "api", StreamSettings::default())
        .await
        .unwrap();

    // The notifier reads `user.created` through its own durable consumer...
    let own = "$JS.API.CONSUMER.CREATE.EVENTS.notifier--user_created.events.user.created";
    let created = jetstream_request(
        &nats,
        "notifier",
        own,
        consumer_config("notifier--user_created", "events.user.created"),
    )
    .await
    .expect("the notifier creates its own consumer");
    assert!(created.get("error").is_none(), "{created}");
    // ...but cannot open one on session revocations, under any name,
    let foreign = "$JS.API.CONSUMER.CREATE.EVENTS.peek.events.session.revoked";
    let refused = jetstream_request(
        &nats,
        "notifier",
        foreign,
        consumer_config("peek", "events.session.revoked"),
    )
    .await;
    assert!(refused.is_none(), "{refused:?}");
    // nor an unnamed one, whose subject does not say its filter,
    let unnamed = jetstream_request(
        &nats,
        "notifier",
        "$JS.API.CONSUMER.CREATE.EVENTS",
        consumer_config("", "events.session.revoked"),
    )
    .await;
    assert!(unnamed.is_none(), "{unnamed:?}");
    // and its own subject with another filter in the body is refused by the server itself.
    let mismatched = jetstream_request(
        &nats,
        "notifier",
        own,
        consumer_config("notifier--user_created", "events.session.revoked"),
    )
    .await
    .expect("the server answers");
    assert!(mismatched.get("error").is_some(), "{mismatched}");

    // The api may open ordered consumers (any name) on revocations, but not pull, ack or
    // delete the notifier's durable.
    let ordered = jetstream_request(
        &nats,
        "api",
        "$JS.API.CONSUMER.CREATE.EVENTS.api-revocations-1.events.session.revoked",
        consumer_config("api-revocations-1", "events.session.revoked"),
    )
    .await
    .expect("the api opens its revocation consumer");
    assert!(ordered.get("error").is_none(), "{ordered}");
    let stolen = jetstream_request(
        &nats,
        "api",
        "$JS.API.CONSUMER.MSG.NEXT.EVENTS.notifier--user_created",
        json!({"batch": 1, "no_wait": true}),
    )
    .await;
    assert!(stolen.is_none(), "{stolen:?}");
    let deleted = jetstream_request(
        &nats,
        "api",
        "$JS.API.CONSUMER.DELETE.EVENTS.notifier--user_created",
        json!({}),
    )
    .await;
    assert!(deleted.is_none(), "{deleted:?}");
    // (the api may not even look it up: ask as the notifier)
    let notifier =
        platform::nats::connect_with(&nats.url(), "notifier", Some(&nats.auth("notifier")))
            .await
            .unwrap();
    let mut notifier = async_nats::jetstream::new(notifier);
    notifier.set_timeout(Duration::from_secs(2));
    let events = notifier.get_stream("EVENTS").await.unwrap();
    assert!(
        events.consumer_info("notifier--user_created").await.is_ok(),
        "the durable is still there"
    );

    let violations = nats.violations();
    for subject in [
        foreign,
        "$JS.API.CONSUMER.CREATE.EVENTS\"",
        "$JS.API.CONSUMER.MSG.NEXT.EVENTS.notifier--user_created",
        "$JS.API.CONSUMER.DELETE.EVENTS.notifier--user_created",
    ] {
        assert!(
            violations.iter().any(|line| line.contains(subject)),
            "no violation logged for {subject}: {violations:#?}"
        );
    }
}

/// The replicas and storage settings reach the streams; a replica count the server cannot
/// give is a clear error at start.
#[tokio::test]
async fn streams_get_the_configured_replicas_and_storage() {
    let client = platform::nats::connect(&test_support::nats_url(), "replicas-test")
        .await
        .unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let namespace = e2e_tests::unique_namespace();
    let settings = StreamSettings {
        replicas: 1,
        storage: StreamStorage::Memory,
    };
    let bus = bus::Bus::start_with(jetstream.clone(), &namespace, "test", settings)
        .await
        .unwrap();
    for base in bus::streams::STREAM_NAMES {
        let stream = jetstream.get_stream(bus.stream_name(base)).await.unwrap();
        let config = &stream.cached_info().config;
        assert_eq!(config.num_replicas, 1, "{base}");
        assert_eq!(
            config.storage,
            async_nats::jetstream::stream::StorageType::Memory,
            "{base}"
        );
    }
    bus.delete_streams().await.unwrap();

    // Three replicas on one (unclustered) server: refused, and the error says so.
    let other = e2e_tests::unique_namespace();
    let three = StreamSettings {
        replicas: 3,
        storage: StreamStorage::File,
    };
    let error = bus::Bus::start_with(jetstream.clone(), &other, "test", three)
        .await
        .err()
        .expect("a single server cannot hold three replicas");
    let message = error.to_string();
    assert!(
        message.contains("creating stream") && message.to_lowercase().contains("replica"),
        "{message}"
    );
    e2e_tests::delete_namespace(&test_support::nats_url(), &other).await;
}
