//! Helpers shared by the fault tests: how often a task consumer was delivered to, and row
//! counts.

use test_support::nats_url;

use crate::common::System;

/// How many times JetStream has delivered messages to one of the test's task consumers
/// (redeliveries included): with one message, the attempts made so far.
pub(crate) async fn deliveries(system: &System, consumer: &str) -> u64 {
    let client = async_nats::connect(nats_url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream
        .get_stream(format!("{}_TASKS", system.namespace.to_ascii_uppercase()))
        .await
        .unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer(consumer).await.unwrap();
    consumer.info().await.unwrap().delivered.consumer_sequence
}

pub(crate) async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}
