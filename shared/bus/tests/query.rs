//! Typed request/reply (`bus::query`) on a real NATS server: answered once per question by
//! one of several replicas, no responders fail fast, undecodable requests get an error reply,
//! shutdown stops answering.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bus::Bus;
use messages::definition::Query;
use tokio_util::sync::CancellationToken;

#[derive(Clone, PartialEq, prost::Message)]
struct Echo {
    #[prost(string, tag = "1")]
    text: String,
}

impl Query for Echo {
    const NAME: &'static str = "test.echo";
    type Reply = Echo;
}

async fn bus(namespace: &str, service: &'static str) -> Bus {
    let client = platform::nats::connect(&test_support::nats_url(), service)
        .await
        .unwrap();
    Bus::start(async_nats::jetstream::new(client), namespace, service)
        .await
        .unwrap()
}

fn namespace() -> String {
    format!("q{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

#[tokio::test]
async fn each_question_is_answered_once_by_one_replica() {
    let namespace = namespace();
    let shutdown = CancellationToken::new();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut servers = Vec::new();
    for replica in 0..2 {
        let owner = bus(&namespace, "owner").await;
        let answered = Arc::clone(&answered);
        servers.push(
            bus::query::serve::<Echo, _, _>(
                &owner,
                4,
                move |question: Echo| {
                    let answered = Arc::clone(&answered);
                    async move {
                        answered.fetch_add(1, Ordering::SeqCst);
                        Echo {
                            text: format!("{} from {replica}", question.text.to_uppercase()),
                        }
                    }
                },
                shutdown.clone(),
            )
            .await
            .unwrap(),
        );
    }
    let asker = bus(&namespace, "asker").await;
    for index in 0..20 {
        let reply = asker
            .request(
                &Echo {
                    text: format!("hello {index}"),
                },
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert!(
            reply.text.starts_with(&format!("HELLO {index} from ")),
            "{}",
            reply.text
        );
    }
    assert_eq!(
        answered.load(Ordering::SeqCst),
        20,
        "one answer per question"
    );

    // A request the owner cannot decode gets an error reply, not silence.
    let client = async_nats::connect(test_support::nats_url()).await.unwrap();
    let reply = client
        .request(
            format!("{namespace}.queries.test.echo"),
            // Field 1, length 255, but no bytes follow.
            bytes::Bytes::from_static(&[0x0a, 0xff, 0x01]),
        )
        .await
        .unwrap();
    let problem = reply
        .headers
        .as_ref()
        .and_then(|headers| headers.get(bus::query::QUERY_ERROR_HEADER))
        .map(|value| value.as_str().to_owned())
        .unwrap();
    assert!(problem.contains("undecodable request"), "{problem}");

    // After shutdown nobody answers: no responders, at once.
    shutdown.cancel();
    for server in servers {
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }
    let started = Instant::now();
    let error = asker
        .request(
            &Echo {
                text: "anyone?".into(),
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("query test.echo"),
        "the error names the query: {error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no responders fails fast, not after the timeout ({error})"
    );
    asker.delete_streams().await.unwrap();
}
