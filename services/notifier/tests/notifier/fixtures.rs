//! The notifier under test, with its SuprSend stand-in, and helpers shared by its tests.

use std::time::Duration;

use bus::Bus;
use notifier::Config;
use secrecy::SecretString;
use sqlx::PgPool;
use test_support::{TestDb, eventually, nats_url};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::suprsend_standin::StandIn;

const KEY: &str = "test-suprsend-key";

pub(crate) struct Fixture {
    pub(crate) _db: TestDb,
    pub(crate) pool: PgPool,
    pub(crate) bus: Bus,
    pub(crate) stand_in: StandIn,
    pub(crate) config: Config,
    pub(crate) shutdown: CancellationToken,
    pub(crate) handle: JoinHandle<Result<(), notifier::Error>>,
}

impl Fixture {
    pub(crate) async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new().await;
        let stand_in = StandIn::start(KEY).await;
        let namespace = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        let mut config = Config::for_tests(db.url(), &nats_url());
        config.suprsend_base_url = stand_in.base_url.clone();
        config.suprsend_api_key = Some(SecretString::from(KEY));
        config.common.bus_namespace = namespace.clone();
        configure(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ready_url = format!("http://{}/readyz", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(notifier::run(config.clone(), listener, shutdown.clone()));
        let ready = eventually(Duration::from_secs(30), || {
            let url = ready_url.clone();
            async move { test_support::get(&url).await.0 == 200 }
        })
        .await;
        assert!(ready, "the notifier never became ready");
        let client = async_nats::connect(nats_url()).await.unwrap();
        let bus = Bus::start(async_nats::jetstream::new(client), &namespace, "tests")
            .await
            .unwrap();
        let pool = platform::db::connect(
            &SecretString::from(db.url().to_owned()),
            notifier::SCHEMA,
            2,
        )
        .await
        .unwrap();
        Self {
            _db: db,
            pool,
            bus,
            stand_in,
            config,
            shutdown,
            handle,
        }
    }

    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        test_support::assert_stops_ok("the notifier", Duration::from_secs(15), self.handle).await;
        let _ = self.bus.delete_streams().await;
    }

    pub(crate) async fn status(&self, key: &str) -> Option<(String, i32)> {
        sqlx::query_as("SELECT status, attempts FROM notifications WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
    }

    pub(crate) async fn wait_status(&self, key: &str, status: &str, timeout: Duration) {
        let reached = eventually(timeout, || async {
            self.status(key)
                .await
                .is_some_and(|(found, _)| found == status)
        })
        .await;
        assert!(
            reached,
            "{key} never became {status}: {:?}; requests: {:?}",
            self.status(key).await,
            self.stand_in.received()
        );
    }

    /// (attempt, outcome, http_status, latency_ms) of every attempt, in order.
    pub(crate) async fn attempts(&self, key: &str) -> Vec<(i32, String, Option<i16>, i32)> {
        sqlx::query_as(
            "SELECT attempt, outcome, http_status, latency_ms FROM delivery_attempts
              WHERE idempotency_key = $1 ORDER BY attempted_at, attempt",
        )
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}
