//! The WAL outbox against a real PostgreSQL at `wal_level=logical` (a private server: the
//! shared one runs at `replica`) and real JetStream: messages leave in commit order, only
//! committed ones, each once even when read twice, and nothing is lost while NATS is down.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer;
use bus::Bus;
use bus::headers;
use bus::outbox::OutboxBatch;
use bus::wal_outbox::stream::ReplicationTarget;
use bus::wal_outbox::{WalOutboxConfig, relay, slot, stream};
use futures::StreamExt;
use messages::journal::v1::BusProbe;
use prost::Message;
use sqlx::PgPool;
use test_support::{PrivateNats, PrivatePostgres, eventually, nats_url};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);
const SCHEMA: &str = "worker";
const SUBJECT: &str = "changes.user.probe";

struct Fixture {
    postgres: PrivatePostgres,
    pool: PgPool,
    bus: Bus,
    config: WalOutboxConfig,
}

impl Fixture {
    async fn new(nats_url: &str) -> Self {
        let postgres = PrivatePostgres::start_with(&["wal_level=logical"]);
        // The worker's schema, for its bus tables: the table outbox of a rolling deploy.
        let pool = platform::db::connect(
            &secrecy::SecretString::from(postgres.admin_url()),
            SCHEMA,
            8,
        )
        .await
        .unwrap();
        platform::db::migrate(&pool, SCHEMA, &common::MIGRATOR)
            .await
            .unwrap();
        let namespace = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        let client = platform::nats::connect(nats_url, "wal-outbox-test")
            .await
            .unwrap();
        let bus = Bus::start(async_nats::jetstream::new(client), &namespace, "waltest")
            .await
            .unwrap();
        let mut config = WalOutboxConfig::new(SCHEMA);
        config.ack_timeout = Duration::from_secs(1);
        slot::ensure(&pool, &config).await.unwrap();
        Self {
            postgres,
            pool,
            bus,
            config,
        }
    }

    /// Emit `sequences` as probes in one transaction of `schema`'s outbox.
    async fn emit(&self, schema: &str, sequences: &[i64]) -> Vec<Uuid> {
        let mut tx = self.pool.begin().await.unwrap();
        let ids = batch(sequences).emit_to_wal(&mut tx, schema).await.unwrap();
        tx.commit().await.unwrap();
        ids
    }

    /// Every message in the CHANGES stream: (message id, probe sequence), in stream order.
    async fn published(&self) -> Vec<(String, i64)> {
        let mut stream = self
            .bus
            .jetstream()
            .get_stream(self.bus.stream_name("CHANGES"))
            .await
            .unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut published = Vec::new();
        if last == 0 {
            return published;
        }
        let mut messages = stream
            .create_consumer(consumer::pull::OrderedConfig::default())
            .await
            .unwrap()
            .messages()
            .await
            .unwrap();
        while let Some(message) = tokio::time::timeout(WAIT, messages.next()).await.unwrap() {
            let message = message.unwrap();
            let id = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(headers::MESSAGE_ID))
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default();
            let probe = BusProbe::decode(message.payload.as_ref()).unwrap();
            published.push((id, probe.sequence));
            if message.info().unwrap().stream_sequence >= last {
                break;
            }
        }
        published
    }

    async fn sequences(&self) -> Vec<i64> {
        self.published()
            .await
            .into_iter()
            .map(|(_, sequence)| sequence)
            .collect()
    }

    /// The streaming relay of this slot, as the service skeleton runs it, until `shutdown`.
    fn spawn_stream(&self, shutdown: &CancellationToken) -> tokio::task::JoinHandle<()> {
        let target = ReplicationTarget::from_database_url(
            &secrecy::SecretString::from(self.postgres.admin_url()),
            None,
        )
        .unwrap();
        tokio::spawn(stream::run(
            self.bus.clone(),
            self.pool.clone(),
            self.config.clone(),
            target,
            shutdown.clone(),
            Duration::from_secs(5),
        ))
    }

    /// Wait until the stream holds exactly `expected`, in order.
    async fn wait_for(&self, expected: &[i64]) {
        let arrived = eventually(WAIT, || async {
            self.sequences().await.len() >= expected.len()
        })
        .await;
        assert!(arrived, "only {:?} arrived", self.sequences().await);
        assert_eq!(self.sequences().await, expected);
    }

    /// Changes the slot still holds for a reader (once no stream holds the slot).
    async fn held(&self) -> i64 {
        for _ in 0..50 {
            if let Ok(held) = self.try_held().await {
                return held;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.try_held().await.unwrap()
    }

    async fn try_held(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1::name, NULL, NULL,
                    'proto_version', '1', 'publication_names', $2, 'messages', 'true')",
        )
        .bind(&self.config.slot)
        .bind(&self.config.publication)
        .fetch_one(&self.pool)
        .await
    }
}

/// Probes as changesets of one scope: CHANGES keeps every message (TASKS, a work queue,
/// allows no ordered consumer to read it back).
fn batch(sequences: &[i64]) -> OutboxBatch {
    let mut batch = OutboxBatch::new();
    for &sequence in sequences {
        let probe = BusProbe {
            run_id: String::new(),
            sequence,
            aggregate_key: SUBJECT.to_owned(),
        };
        batch.push_raw(SUBJECT, "probe", probe.encode_to_vec(), Some(SUBJECT));
    }
    batch
}

#[tokio::test]
async fn committed_messages_leave_in_commit_order_and_rolled_back_ones_never() {
    let fixture = Fixture::new(&nats_url()).await;
    // Two transactions open at once: the later one commits first, so its messages go first.
    let mut first = fixture.pool.begin().await.unwrap();
    let first_ids = batch(&[3]).emit_to_wal(&mut first, SCHEMA).await.unwrap();
    let mut second = fixture.pool.begin().await.unwrap();
    let second_ids = batch(&[1, 2])
        .emit_to_wal(&mut second, SCHEMA)
        .await
        .unwrap();
    second.commit().await.unwrap();
    first.commit().await.unwrap();
    let mut rolled_back = fixture.pool.begin().await.unwrap();
    batch(&[99])
        .emit_to_wal(&mut rolled_back, SCHEMA)
        .await
        .unwrap();
    rolled_back.rollback().await.unwrap();
    // Another schema's message: its own relay's, not this one's.
    fixture.emit("other", &[98]).await;
    let last_ids = fixture.emit(SCHEMA, &[4]).await;

    let pass = relay::publish_pass(&fixture.bus, &fixture.pool, &fixture.config)
        .await
        .unwrap();
    assert_eq!(pass.published, 4, "{pass:?}");
    let published = fixture.published().await;
    let expected_ids: Vec<String> = second_ids
        .iter()
        .chain(&first_ids)
        .chain(&last_ids)
        .map(Uuid::to_string)
        .collect();
    assert_eq!(
        published,
        expected_ids
            .into_iter()
            .zip([1, 2, 3, 4])
            .collect::<Vec<_>>(),
        "commit order, each message with its outbox id as Nats-Msg-Id"
    );
    // The slot moved past everything it read, the other schema's transaction included.
    assert_eq!(fixture.held().await, 0);
    let again = relay::publish_pass(&fixture.bus, &fixture.pool, &fixture.config)
        .await
        .unwrap();
    assert_eq!(again.published, 0);
    assert_eq!(fixture.sequences().await, [1, 2, 3, 4]);
    fixture.bus.delete_streams().await.unwrap();
}

#[tokio::test]
async fn messages_read_again_before_the_slot_advanced_are_published_once() {
    let fixture = Fixture::new(&nats_url()).await;
    // A second slot over the same messages plays the relay that published and then died
    // before advancing: its next read publishes them all again, with the same ids.
    let mut replay = fixture.config.clone();
    replay.slot = "bus_outbox_worker_replay".to_owned();
    slot::ensure(&fixture.pool, &replay).await.unwrap();
    for sequence in 1..=5 {
        fixture.emit(SCHEMA, &[sequence]).await;
    }
    let pass = relay::publish_pass(&fixture.bus, &fixture.pool, &fixture.config)
        .await
        .unwrap();
    assert_eq!(pass.published, 5);
    let replayed = relay::publish_pass(&fixture.bus, &fixture.pool, &replay)
        .await
        .unwrap();
    assert_eq!(replayed.published, 5, "acked again, as duplicates");
    assert_eq!(fixture.sequences().await, [1, 2, 3, 4, 5]);
    fixture.bus.delete_streams().await.unwrap();
}

#[tokio::test]
async fn one_relay_reads_a_slot_at_a_time() {
    let fixture = Fixture::new(&nats_url()).await;
    fixture.emit(SCHEMA, &[1]).await;
    // Another replica's pass, holding the slot's lock.
    let mut other = fixture.pool.begin().await.unwrap();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext($1))")
        .bind(format!("bus.wal_outbox.{}", fixture.config.slot))
        .fetch_one(&mut *other)
        .await
        .unwrap();
    assert!(locked);
    let pass = relay::publish_pass(&fixture.bus, &fixture.pool, &fixture.config)
        .await
        .unwrap();
    assert!(pass.busy, "{pass:?}");
    assert_eq!(pass.published, 0);
    other.rollback().await.unwrap();
    let pass = relay::publish_pass(&fixture.bus, &fixture.pool, &fixture.config)
        .await
        .unwrap();
    assert_eq!(pass.published, 1, "{pass:?}");
    fixture.bus.delete_streams().await.unwrap();
}

#[tokio::test]
async fn messages_wait_in_the_slot_while_nats_is_down_and_all_leave_once_after() {
    let mut nats = PrivateNats::start();
    let fixture = Fixture::new(&nats.url()).await;
    for sequence in 1..=20 {
        fixture.emit(SCHEMA, &[sequence]).await;
    }
    let held = fixture.held().await;
    assert!(held >= 60, "20 transactions of 3 changes each, held {held}");
    nats.stop();
    let started = Instant::now();
    let failed = relay::publish_pass(&fixture.bus, &fixture.pool, &fixture.config).await;
    assert!(failed.is_err(), "published with NATS down: {failed:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a failing pass took {:?}",
        started.elapsed()
    );
    assert_eq!(
        fixture.held().await,
        held,
        "the slot moved past unpublished messages"
    );
    nats.resume();
    let drained = eventually(WAIT, || async {
        relay::drain(&fixture.bus, &fixture.pool, &fixture.config)
            .await
            .is_ok()
            && fixture.held().await == 0
    })
    .await;
    assert!(
        drained,
        "the relay did not drain the slot once NATS was back"
    );
    assert_eq!(fixture.sequences().await, (1..=20).collect::<Vec<_>>());
    fixture.bus.delete_streams().await.unwrap();
}

#[tokio::test]
async fn making_the_slot_is_idempotent_and_safe_from_two_replicas_at_once() {
    let fixture = Fixture::new(&nats_url()).await;
    let mut config = fixture.config.clone();
    config.slot = "bus_outbox_worker_raced".to_owned();
    config.publication = "bus_outbox_raced".to_owned();
    assert!(!slot::exists(&fixture.pool, &config).await.unwrap());
    let (first, second) = tokio::join!(
        slot::ensure(&fixture.pool, &config),
        slot::ensure(&fixture.pool, &config)
    );
    first.unwrap();
    second.unwrap();
    slot::ensure(&fixture.pool, &config).await.unwrap();
    assert!(slot::exists(&fixture.pool, &config).await.unwrap());
    fixture.bus.delete_streams().await.unwrap();
}

#[tokio::test]
async fn a_rolling_deploy_publishes_table_rows_of_the_old_release_before_later_wal_messages() {
    let fixture = Fixture::new(&nats_url()).await;
    // The new release emits into the WAL, an old replica writes a row to the table outbox,
    // then the new release emits again: one key, so the stream must keep this order.
    fixture.emit(SCHEMA, &[1]).await;
    let mut tx = fixture.pool.begin().await.unwrap();
    batch(&[2]).write(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    fixture.emit(SCHEMA, &[3]).await;

    // The WAL relay publishes what committed before the table row, and waits at the rest.
    let pass = relay::publish_pass(&fixture.bus, &fixture.pool, &fixture.config)
        .await
        .unwrap();
    assert_eq!(pass.published, 1, "{pass:?}");
    assert!(pass.held_back, "{pass:?}");
    let again = relay::publish_pass(&fixture.bus, &fixture.pool, &fixture.config)
        .await
        .unwrap();
    assert_eq!(
        again.published, 0,
        "the WAL went past an unsent table row: {again:?}"
    );
    assert_eq!(fixture.sequences().await, [1]);

    // The table relay (which runs in every release) publishes the row; then the WAL goes on.
    let relayed = bus::relay::drain(
        &fixture.bus,
        &fixture.pool,
        &bus::relay::RelayConfig::new(SCHEMA),
    )
    .await
    .unwrap();
    assert_eq!(relayed, 1);
    let pass = relay::publish_pass(&fixture.bus, &fixture.pool, &fixture.config)
        .await
        .unwrap();
    assert_eq!(pass.published, 1, "{pass:?}");
    assert!(!pass.held_back);
    let published = fixture.published().await;
    assert_eq!(
        published
            .iter()
            .map(|(_, sequence)| *sequence)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let ids: std::collections::HashSet<&String> = published.iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids.len(),
        3,
        "each message once, with its own id: {published:?}"
    );
    fixture.bus.delete_streams().await.unwrap();
}

#[tokio::test]
async fn the_streaming_relay_publishes_in_commit_order_and_moves_the_slot_past_what_was_acked() {
    let fixture = Fixture::new(&nats_url()).await;
    let shutdown = CancellationToken::new();
    let relay = fixture.spawn_stream(&shutdown);
    for sequence in 1..=3 {
        fixture.emit(SCHEMA, &[sequence]).await;
    }
    fixture.emit(SCHEMA, &[4, 5]).await;
    let mut rolled_back = fixture.pool.begin().await.unwrap();
    batch(&[99])
        .emit_to_wal(&mut rolled_back, SCHEMA)
        .await
        .unwrap();
    rolled_back.rollback().await.unwrap();
    fixture.emit("other", &[98]).await;
    fixture.emit(SCHEMA, &[6]).await;
    fixture.wait_for(&[1, 2, 3, 4, 5, 6]).await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, relay)
        .await
        .expect("the relay stops with its token")
        .unwrap();
    // The stream told the server how far it published: nothing is left to send again.
    assert_eq!(fixture.held().await, 0);
    fixture.bus.delete_streams().await.unwrap();
}

#[tokio::test]
async fn one_streaming_relay_per_slot_and_another_takes_over_when_it_stops() {
    let fixture = Fixture::new(&nats_url()).await;
    let first_stop = CancellationToken::new();
    let first = fixture.spawn_stream(&first_stop);
    fixture.emit(SCHEMA, &[1, 2]).await;
    fixture.wait_for(&[1, 2]).await;
    // A second replica's relay: Postgres refuses it the slot while the first streams.
    let second_stop = CancellationToken::new();
    let second = fixture.spawn_stream(&second_stop);
    fixture.emit(SCHEMA, &[3]).await;
    fixture.wait_for(&[1, 2, 3]).await;
    first_stop.cancel();
    tokio::time::timeout(WAIT, first).await.unwrap().unwrap();
    fixture.emit(SCHEMA, &[4]).await;
    fixture.wait_for(&[1, 2, 3, 4]).await;
    let published = fixture.published().await;
    let ids: std::collections::HashSet<&String> = published.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 4, "each message once: {published:?}");
    second_stop.cancel();
    tokio::time::timeout(WAIT, second).await.unwrap().unwrap();
    fixture.bus.delete_streams().await.unwrap();
}

#[tokio::test]
async fn the_streaming_relay_lets_table_rows_of_an_older_release_go_first() {
    let fixture = Fixture::new(&nats_url()).await;
    let shutdown = CancellationToken::new();
    let relay = fixture.spawn_stream(&shutdown);
    fixture.emit(SCHEMA, &[1]).await;
    fixture.wait_for(&[1]).await;
    let mut tx = fixture.pool.begin().await.unwrap();
    batch(&[2]).write(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    fixture.emit(SCHEMA, &[3]).await;
    // No table relay runs yet: the WAL message committed after the unsent row waits for it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fixture.sequences().await,
        [1],
        "the WAL went past an unsent table row"
    );
    let relayed = bus::relay::drain(
        &fixture.bus,
        &fixture.pool,
        &bus::relay::RelayConfig::new(SCHEMA),
    )
    .await
    .unwrap();
    assert_eq!(relayed, 1);
    fixture.wait_for(&[1, 2, 3]).await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, relay).await.unwrap().unwrap();
    fixture.bus.delete_streams().await.unwrap();
}

#[tokio::test]
async fn the_streaming_relay_rides_out_a_nats_outage_and_publishes_everything_once() {
    let mut nats = PrivateNats::start();
    let fixture = Fixture::new(&nats.url()).await;
    let shutdown = CancellationToken::new();
    let relay = fixture.spawn_stream(&shutdown);
    fixture.emit(SCHEMA, &[1]).await;
    fixture.wait_for(&[1]).await;
    nats.stop();
    let before_outage: i64 =
        sqlx::query_scalar("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint")
            .fetch_one(&fixture.pool)
            .await
            .unwrap();
    for sequence in 2..=10 {
        fixture.emit(SCHEMA, &[sequence]).await;
    }
    // Publishes fail (acks time out after 1 s): the stream reconnects and is sent them again,
    // and the slot never moves past them meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let confirmed: i64 = sqlx::query_scalar(
        "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint FROM pg_replication_slots
          WHERE slot_name = $1",
    )
    .bind(&fixture.config.slot)
    .fetch_one(&fixture.pool)
    .await
    .unwrap();
    assert!(
        confirmed <= before_outage,
        "the slot moved past messages that were not published ({confirmed} > {before_outage})"
    );
    nats.resume();
    fixture.wait_for(&(1..=10).collect::<Vec<_>>()).await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, relay).await.unwrap().unwrap();
    assert_eq!(fixture.held().await, 0);
    fixture.bus.delete_streams().await.unwrap();
}

#[test]
fn the_replication_target_comes_from_the_database_url_and_keeps_its_password_out_of_debug() {
    let target = ReplicationTarget::from_database_url(
        &secrecy::SecretString::from(
            "postgres://journal_api:p%40ss@db.internal:6543/journal?sslmode=verify-full".to_owned(),
        ),
        None,
    )
    .unwrap();
    let shown = format!("{target:?}");
    assert!(
        shown.contains("db.internal") && shown.contains("6543") && shown.contains("journal_api"),
        "{shown}"
    );
    assert!(
        !shown.contains("p@ss") && !shown.contains("p%40ss"),
        "{shown}"
    );
    let refused = ReplicationTarget::from_database_url(
        &secrecy::SecretString::from("postgres://u@h/db?sslmode=sometimes".to_owned()),
        None,
    )
    .unwrap_err();
    assert!(refused.to_string().contains("sslmode"), "{refused}");
}

#[tokio::test]
async fn a_stop_while_messages_wait_for_the_table_outbox_ends_within_the_grace() {
    let fixture = Fixture::new(&nats_url()).await;
    let shutdown = CancellationToken::new();
    let relay = fixture.spawn_stream(&shutdown);
    fixture.emit(SCHEMA, &[1]).await;
    fixture.wait_for(&[1]).await;
    // A table row no relay publishes, and a WAL message that must wait for it.
    let mut tx = fixture.pool.begin().await.unwrap();
    batch(&[2]).write(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    fixture.emit(SCHEMA, &[3]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    shutdown.cancel();
    tokio::time::timeout(WAIT, relay)
        .await
        .expect("the relay stops while its messages wait")
        .unwrap();
    // The grace is 5 s (`spawn_stream`); the message stays in the slot for the next relay.
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "the stop took {:?}",
        stopping.elapsed()
    );
    assert_eq!(fixture.sequences().await, [1]);
    assert!(
        fixture.held().await > 0,
        "the waiting message left the slot"
    );
    fixture.bus.delete_streams().await.unwrap();
}
