//! The running WAL relay: reads its slot over the streaming replication protocol, as a replica
//! does. The walsender keeps its decoding state and sends each committed transaction once, so
//! nothing is decoded twice; the SQL functions ([`super::relay::publish_pass`]) decode from the
//! slot's `restart_lsn` on every call, which on PostgreSQL 15 moves only every 15 s
//! (docs/benchmarks.md, "`system-create` with the WAL outbox read by SQL peeks").
//!
//! The stream's reply ("flushed up to") moves the slot: it is sent only past transactions
//! whose messages JetStream acked. A connection lost before that resends them from the slot's
//! position; their ids make the copies duplicates the stream drops. A slot streams to one
//! connection at a time, so a second replica's relay is refused until the first stops: that
//! is the lease.

use std::time::{Duration, Instant};

use futures::FutureExt;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::WalOutboxConfig;
use super::decode::{POSTGRES_EPOCH_MICROS, WalTransaction};
use super::relay::{publish_transactions, publishable_before_table_rows, report_lag};
use super::slot;
use crate::BusError;
use crate::reattach;
use crate::streams::Bus;

/// Where the replication connection goes: the service's own database and role (which needs
/// `REPLICATION`).
#[derive(Clone)]
pub struct ReplicationTarget {
    host: String,
    port: u16,
    user: String,
    password: SecretString,
    database: String,
    tls: TlsConfig,
}

impl std::fmt::Debug for ReplicationTarget {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ReplicationTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl ReplicationTarget {
    /// From the service's `DATABASE_URL` (and `DATABASE_PASSWORD`, which wins over a password
    /// in the URL). `sslmode` maps to the same TLS modes; certificates are checked against
    /// the Mozilla roots. A Unix-socket URL is not supported (the stream needs TCP here).
    pub fn from_database_url(
        database_url: &SecretString,
        password: Option<&SecretString>,
    ) -> Result<Self, BusError> {
        let invalid = |why: &str| BusError::ReplicationUrl(why.to_owned());
        let url = url::Url::parse(database_url.expose_secret())
            .map_err(|_| invalid("it is not a URL"))?;
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|decoded| decoded.into_owned())
                .map_err(|_| invalid("it is not UTF-8 once decoded"))
        };
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| invalid("it names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let user = decode(url.username())?;
        let url_password = url.password().map(decode).transpose()?.unwrap_or_default();
        let database = decode(url.path().trim_start_matches('/'))?;
        let mut tls = TlsConfig::disabled();
        for (name, value) in url.query_pairs() {
            if name == "sslmode" {
                tls = match value.as_ref() {
                    "disable" => TlsConfig::disabled(),
                    "allow" | "prefer" => TlsConfig {
                        mode: pgwire_replication::SslMode::Prefer,
                        ..TlsConfig::default()
                    },
                    "require" => TlsConfig::require(),
                    "verify-ca" => TlsConfig::verify_ca(None),
                    "verify-full" => TlsConfig::verify_full(None),
                    other => return Err(invalid(&format!("unknown sslmode `{other}`"))),
                };
            }
        }
        Ok(Self {
            host,
            port: url.port().unwrap_or(5432),
            user: if user.is_empty() {
                "postgres".to_owned()
            } else {
                user
            },
            password: password
                .cloned()
                .unwrap_or_else(|| SecretString::from(url_password)),
            database: if database.is_empty() {
                "postgres".to_owned()
            } else {
                database
            },
            tls,
        })
    }

    fn replication_config(&self, config: &WalOutboxConfig) -> ReplicationConfig {
        let mut replication = ReplicationConfig::new(
            self.host.clone(),
            self.user.clone(),
            self.password.expose_secret(),
            self.database.clone(),
            config.slot.clone(),
            config.publication.as_str(),
        )
        .with_port(self.port)
        .with_tls(self.tls.clone())
        .with_status_interval(STATUS_INTERVAL)
        .with_wakeup_interval(Duration::from_secs(1));
        replication.application_name = Some(format!("bus-wal-outbox-{}", config.schema));
        replication
    }
}

/// The reply that moves the slot goes out this soon after a batch's acks.
const STATUS_INTERVAL: Duration = Duration::from_millis(100);
/// Most messages published in one batch (the acks of a batch are awaited together).
const BATCH_MESSAGES: usize = 500;
/// How long to wait before looking again while table-outbox rows must go first.
const TABLE_OUTBOX_WAIT: Duration = Duration::from_millis(10);
/// On stop, how long a silent stream means everything was received.
const QUIET_ON_STOP: Duration = Duration::from_millis(250);
/// How often the slot's lag gauge is refreshed.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// Stream the slot and publish until `shutdown`; then keep going until everything flushed
/// before the stop is published, for at most `final_publish`.
pub async fn run(
    bus: Bus,
    pool: PgPool,
    config: WalOutboxConfig,
    target: ReplicationTarget,
    shutdown: CancellationToken,
    final_publish: Duration,
) {
    tracing::info!(slot = %config.slot, "WAL outbox relay started (streaming)");
    let mut stop = None;
    let mut failures: u32 = 0;
    loop {
        let mut session = Session {
            bus: &bus,
            pool: &pool,
            config: &config,
            shutdown: &shutdown,
            final_publish,
            stop: &mut stop,
            confirmed: 0,
            confirmed_at: None,
        };
        match session.stream(&target).await {
            Ok(()) => break,
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = reattach::attach_retry_delay(failures);
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "WAL outbox stream failed; messages wait in the slot");
                if shutdown.is_cancelled() && stop.is_none() {
                    // Stopping before a session could tell where the WAL stood: keep trying
                    // within the grace all the same.
                    stop = Some(StopTarget {
                        flushed: u64::MAX,
                        deadline: Instant::now() + final_publish,
                    });
                }
                if let Some(StopTarget { deadline, .. }) = stop
                    && Instant::now() + delay >= deadline
                {
                    tracing::warn!(
                        "WAL outbox relay ran out of time publishing on stop; the next relay sends the rest"
                    );
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled(), if stop.is_none() => {}
                }
            }
        }
    }
    tracing::info!(slot = %config.slot, "WAL outbox relay stopped");
}

/// On stop: publish up to the WAL flushed when the stop came, until the deadline.
#[derive(Debug, Clone, Copy)]
struct StopTarget {
    flushed: u64,
    deadline: Instant,
}

struct Session<'a> {
    bus: &'a Bus,
    pool: &'a PgPool,
    config: &'a WalOutboxConfig,
    shutdown: &'a CancellationToken,
    final_publish: Duration,
    stop: &'a mut Option<StopTarget>,
    /// What this session told the server it may forget.
    confirmed: u64,
    /// When `confirmed` last moved: the reply carrying it goes out within the status interval.
    confirmed_at: Option<Instant>,
}

impl Session<'_> {
    async fn stream(&mut self, target: &ReplicationTarget) -> Result<(), BusError> {
        let stream_error = |error: pgwire_replication::PgWireError| BusError::WalStream {
            slot: self.config.slot.clone(),
            message: error.to_string(),
        };
        slot::ensure(self.pool, self.config).await?;
        let mut client = ReplicationClient::connect(target.replication_config(self.config))
            .await
            .map_err(stream_error)?;
        client.wait_started().await.map_err(stream_error)?;
        let mut open: Option<WalTransaction> = None;
        let mut ready: Vec<WalTransaction> = Vec::new();
        let mut ready_messages = 0;
        let mut last_lag = Instant::now() - LAG_EVERY;
        let prefix = self.config.prefix();
        loop {
            if self.stop_reached(&ready, open.is_some()) {
                self.close(&mut client).await;
                return Ok(());
            }
            // Also while messages wait (held back for the table outbox, whose relay stops
            // too): the grace bounds the stop.
            if self.stop.is_none() && self.shutdown.is_cancelled() {
                self.begin_stop().await;
            }
            if let Some(stop) = *self.stop
                && Instant::now() >= stop.deadline
            {
                tracing::warn!(
                    "WAL outbox relay ran out of time publishing on stop; the next relay sends the rest"
                );
                self.close(&mut client).await;
                return Ok(());
            }
            if last_lag.elapsed() >= LAG_EVERY {
                last_lag = Instant::now();
                report_lag(self.pool, self.config).await;
            }
            // Take every event already received; wait for one only when nothing waits to go.
            let next = if ready.is_empty() {
                let stop_deadline = self.stop.map(|stop| stop.deadline);
                let stopping_quietly = self.stop.is_some() && open.is_none();
                tokio::select! {
                    event = client.recv() => Some(event),
                    () = self.shutdown.cancelled(), if self.stop.is_none() => {
                        self.begin_stop().await;
                        continue;
                    }
                    // Stopping, nothing half-received, and the server silent: what was
                    // flushed before the stop has come (a position reply may not).
                    () = tokio::time::sleep(QUIET_ON_STOP), if stopping_quietly => {
                        self.close(&mut client).await;
                        return Ok(());
                    }
                    () = sleep_until(stop_deadline), if stop_deadline.is_some() => {
                        tracing::warn!("WAL outbox relay ran out of time publishing on stop; the next relay sends the rest");
                        self.close(&mut client).await;
                        return Ok(());
                    }
                }
            } else {
                client.recv().now_or_never()
            };
            let event = match next {
                // Nothing more received for now: publish what is whole.
                None => {
                    self.publish(&client, &mut ready).await?;
                    ready_messages = ready
                        .iter()
                        .map(|transaction| transaction.messages.len())
                        .sum();
                    continue;
                }
                Some(Err(error)) => return Err(stream_error(error)),
                Some(Ok(None)) => {
                    return Err(BusError::WalStream {
                        slot: self.config.slot.clone(),
                        message: "the replication stream ended".to_owned(),
                    });
                }
                Some(Ok(Some(event))) => event,
            };
            match event {
                ReplicationEvent::Begin {
                    commit_time_micros, ..
                } => {
                    open = Some(WalTransaction {
                        end_lsn: 0,
                        committed_at_micros: commit_time_micros
                            .saturating_add(POSTGRES_EPOCH_MICROS),
                        messages: Vec::new(),
                    });
                }
                ReplicationEvent::Message {
                    transactional: true,
                    prefix: message_prefix,
                    content,
                    ..
                } if message_prefix == prefix => {
                    if let Some(transaction) = open.as_mut() {
                        transaction.messages.push(content.to_vec());
                    }
                }
                ReplicationEvent::Commit { end_lsn, .. } => {
                    match open.take() {
                        // Another schema's messages only (each slot is sent every message of
                        // the database): nothing to publish, nothing to check; done with it.
                        Some(transaction)
                            if transaction.messages.is_empty() && ready.is_empty() =>
                        {
                            self.confirm(&client, end_lsn.as_u64());
                        }
                        Some(mut transaction) => {
                            transaction.end_lsn = end_lsn.as_u64();
                            ready_messages += transaction.messages.len();
                            ready.push(transaction);
                        }
                        None => {}
                    }
                    if ready_messages >= BATCH_MESSAGES {
                        self.publish(&client, &mut ready).await?;
                        ready_messages = ready
                            .iter()
                            .map(|transaction| transaction.messages.len())
                            .sum();
                    }
                }
                // Everything before the server's position was sent and is published: a quiet
                // slot moves on too, and holds back no WAL.
                ReplicationEvent::KeepAlive { wal_end, .. }
                    if open.is_none() && ready.is_empty() && wal_end.as_u64() > self.confirmed =>
                {
                    self.confirm(&client, wal_end.as_u64());
                }
                _ => {}
            }
        }
    }

    /// Publish the whole transactions received (those a table-outbox row must precede wait),
    /// and let the server forget the acked ones.
    async fn publish(
        &mut self,
        client: &ReplicationClient,
        ready: &mut Vec<WalTransaction>,
    ) -> Result<(), BusError> {
        if ready.is_empty() {
            return Ok(());
        }
        if ready
            .iter()
            .all(|transaction| transaction.messages.is_empty())
        {
            if let Some(last) = ready.last() {
                self.confirm(client, last.end_lsn);
            }
            ready.clear();
            return Ok(());
        }
        let publishable = publishable_before_table_rows(self.pool, ready).await?;
        if publishable == 0 {
            tokio::time::sleep(TABLE_OUTBOX_WAIT).await;
            return Ok(());
        }
        let outcome = publish_transactions(self.bus, self.config, &ready[..publishable]).await;
        if outcome.acked_transactions > 0 {
            let end = ready[outcome.acked_transactions - 1].end_lsn;
            self.confirm(client, end);
            ready.drain(..outcome.acked_transactions);
        }
        metrics::counter!("bus_outbox_published_total").increment(outcome.published);
        match outcome.failure {
            // The session ends; the next one is sent everything after the slot's position.
            Some(message) => Err(BusError::JetStream {
                operation: "relaying the WAL outbox",
                message,
            }),
            None => Ok(()),
        }
    }

    fn confirm(&mut self, client: &ReplicationClient, lsn: u64) {
        if lsn > self.confirmed {
            self.confirmed = lsn;
            self.confirmed_at = Some(Instant::now());
            client.update_applied_lsn(Lsn::from_u64(lsn));
        }
    }

    /// End the stream once the last position was sent to the server (the client sends it at
    /// most every status interval, and not on stop), so the next relay does not publish again
    /// what this one did.
    async fn close(&mut self, client: &mut ReplicationClient) {
        if let Some(confirmed_at) = self.confirmed_at {
            let sent_by = confirmed_at + STATUS_INTERVAL * 3;
            tokio::time::sleep_until(sent_by.into()).await;
        }
        if let Err(error) = client.shutdown().await {
            tracing::debug!(%error, "the replication stream ended with an error on stop");
        }
    }

    async fn begin_stop(&mut self) {
        let flushed: Result<i64, sqlx::Error> =
            sqlx::query_scalar("SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint")
                .fetch_one(self.pool)
                .await;
        *self.stop = Some(StopTarget {
            // Without the position, publish what comes until the deadline.
            flushed: flushed.map_or(u64::MAX, |lsn| lsn.max(0) as u64),
            deadline: Instant::now() + self.final_publish,
        });
    }

    fn stop_reached(&self, ready: &[WalTransaction], in_transaction: bool) -> bool {
        match *self.stop {
            Some(stop) => {
                self.final_publish.is_zero()
                    || (ready.is_empty() && !in_transaction && self.confirmed >= stop.flushed)
            }
            None => false,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
