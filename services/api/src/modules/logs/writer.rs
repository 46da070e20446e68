//! The batching writer: one per replica behind a bounded queue, off the request path.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::types::RequestLog;
use crate::http::rate_limit::IpRateLimiter;

/// Rows the queue holds before `record` waits.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4_096;
/// Rows per `INSERT`: the writer takes whatever is queued, up to this many.
const MAX_BATCH: usize = 500;
/// Longest pause between retries of a failed batch (Postgres down): the queue fills and
/// requests wait meanwhile.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Request log rows kept for requests without a valid key, per client IP and minute (per
/// replica); beyond it they are only counted (`open_api_unauthenticated_requests_total`).
const UNAUTHENTICATED_ROWS_PER_IP_MINUTE: u32 = 10;
/// The same, for all client IPs together (per replica): many addresses cannot fill the table.
const UNAUTHENTICATED_ROWS_PER_MINUTE: u32 = 120;

/// Where handlers send log rows. Cheap to clone.
#[derive(Clone)]
pub struct RequestLogSink {
    pub(crate) sender: mpsc::Sender<RequestLog>,
    pub(crate) unauthenticated: Arc<UnauthenticatedBudget>,
}

/// How many rows requests without a valid key may write: they belong to no team (nobody can
/// list them), so beyond a sample for operators they are only counted.
pub(crate) struct UnauthenticatedBudget {
    pub(crate) per_ip: IpRateLimiter,
    pub(crate) overall: DefaultDirectRateLimiter,
}

impl UnauthenticatedBudget {
    fn new() -> Self {
        Self {
            per_ip: IpRateLimiter::per_minute(UNAUTHENTICATED_ROWS_PER_IP_MINUTE),
            overall: RateLimiter::direct(Quota::per_minute(
                NonZeroU32::new(UNAUTHENTICATED_ROWS_PER_MINUTE).unwrap_or(NonZeroU32::MIN),
            )),
        }
    }

    fn admits(&self, client_ip: IpAddr) -> bool {
        self.per_ip.check(client_ip.to_canonical()).is_ok() && self.overall.check().is_ok()
    }
}

impl RequestLogSink {
    /// Queue a row, waiting for room when the writer is behind (backpressure). A request
    /// without a valid key (no team) is counted in `open_api_unauthenticated_requests_total`
    /// and written only within the unauthenticated budget.
    pub async fn record(&self, log: RequestLog) {
        if log.team_id.is_none() {
            let logged = self.unauthenticated.admits(log.client_ip);
            metrics::counter!(
                "open_api_unauthenticated_requests_total",
                "service" => crate::SERVICE,
                "logged" => if logged { "true" } else { "false" }
            )
            .increment(1);
            if !logged {
                return;
            }
        }
        if self.sender.send(log.bounded()).await.is_err() {
            // Only once the writer was told to finish: a request still running after the
            // server stopped serving.
            tracing::error!("the request log writer has stopped; a request log row is lost");
            metrics::counter!("request_logs_lost_total").increment(1);
        }
    }
}

/// The background writer; [`RequestLogWriter::finish`] drains it.
pub struct RequestLogWriter {
    pub(crate) handle: JoinHandle<()>,
    pub(crate) closing: CancellationToken,
}

impl RequestLogWriter {
    /// Call once no more requests are being served: the queue is closed (a late `record`
    /// fails, counted in `request_logs_lost_total`), every queued row is written, and the
    /// writer ends. Gives up after `grace` (Postgres down at shutdown), saying so.
    pub async fn finish(self, grace: Duration) {
        self.closing.cancel();
        if tokio::time::timeout(grace, self.handle).await.is_err() {
            tracing::error!(
                grace_ms = grace.as_millis() as u64,
                "request logs were not all written before shutdown"
            );
        }
    }
}

/// Start the writer with a queue of `capacity` rows.
pub fn spawn_writer(pool: PgPool, capacity: usize) -> (RequestLogSink, RequestLogWriter) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    let closing = CancellationToken::new();
    let handle = tokio::spawn(write_batches(pool, receiver, closing.clone()));
    (
        RequestLogSink {
            sender,
            unauthenticated: Arc::new(UnauthenticatedBudget::new()),
        },
        RequestLogWriter { handle, closing },
    )
}

async fn write_batches(
    pool: PgPool,
    mut receiver: mpsc::Receiver<RequestLog>,
    closing: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut closed = false;
    loop {
        // `recv_many` returns as soon as one row is there, with all that are (up to
        // MAX_BATCH): one row per insert when idle, large batches under load, no timer
        // needed. Once the queue is closed it returns what is left, then 0.
        let received = if closed {
            receiver.recv_many(&mut batch, MAX_BATCH).await
        } else {
            tokio::select! {
                received = receiver.recv_many(&mut batch, MAX_BATCH) => received,
                () = closing.cancelled() => {
                    receiver.close();
                    closed = true;
                    continue;
                }
            }
        };
        if received == 0 {
            break;
        }
        let mut pause = Duration::from_millis(50);
        loop {
            match insert(&pool, &batch).await {
                Ok(()) => {
                    metrics::counter!("request_logs_written_total").increment(batch.len() as u64);
                    break;
                }
                Err(error) => {
                    // Keep the rows and retry: the queue fills and requests wait meanwhile.
                    tracing::warn!(%error, rows = batch.len(), "writing request logs failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
            }
        }
        batch.clear();
    }
}

pub(crate) async fn insert(pool: &PgPool, rows: &[RequestLog]) -> Result<(), sqlx::Error> {
    let mut ids = Vec::with_capacity(rows.len());
    let mut created_at = Vec::with_capacity(rows.len());
    let mut team_ids = Vec::with_capacity(rows.len());
    let mut api_team_ids = Vec::with_capacity(rows.len());
    let mut prefixes = Vec::with_capacity(rows.len());
    let mut methods = Vec::with_capacity(rows.len());
    let mut paths = Vec::with_capacity(rows.len());
    let mut statuses = Vec::with_capacity(rows.len());
    let mut durations = Vec::with_capacity(rows.len());
    let mut client_ips = Vec::with_capacity(rows.len());
    let mut user_agents = Vec::with_capacity(rows.len());
    let mut request_ids = Vec::with_capacity(rows.len());
    let mut request_bytes = Vec::with_capacity(rows.len());
    let mut response_bytes = Vec::with_capacity(rows.len());
    let mut error_codes = Vec::with_capacity(rows.len());
    let mut headers = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(row.request_log_id);
        created_at.push(row.created_at);
        team_ids.push(row.team_id);
        api_team_ids.push(row.api_team_id);
        prefixes.push(row.api_key_prefix.clone());
        methods.push(row.method.clone());
        paths.push(row.path.clone());
        statuses.push(i16::try_from(row.status).unwrap_or(i16::MAX));
        durations.push(i64::try_from(row.duration.as_micros()).unwrap_or(i64::MAX));
        client_ips.push(row.client_ip.to_string());
        user_agents.push(row.user_agent.clone());
        request_ids.push(row.request_id.clone());
        request_bytes.push(i64::try_from(row.request_bytes).unwrap_or(i64::MAX));
        response_bytes.push(i64::try_from(row.response_bytes).unwrap_or(i64::MAX));
        error_codes.push(row.error_code.clone());
        headers.push(sqlx::types::Json(row.request_headers.clone()));
    }
    // One statement per batch; `ON CONFLICT` makes a retried batch that had in fact
    // committed (a lost reply) harmless.
    sqlx::query(
        "INSERT INTO request_logs
                (request_log_id, created_at, team_id, api_team_id, api_key_prefix, method, path,
                 status, duration_us, client_ip, user_agent, request_id, request_bytes,
                 response_bytes, error_code, request_headers)
         SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::uuid[], $4::uuid[], $5::text[],
                              $6::text[], $7::text[], $8::int2[], $9::int8[], $10::text[]::inet[],
                              $11::text[], $12::text[], $13::int8[], $14::int8[], $15::text[],
                              $16::jsonb[])
         ON CONFLICT (request_log_id) DO NOTHING",
    )
    .bind(ids)
    .bind(created_at)
    .bind(team_ids)
    .bind(api_team_ids)
    .bind(prefixes)
    .bind(methods)
    .bind(paths)
    .bind(statuses)
    .bind(durations)
    .bind(client_ips)
    .bind(user_agents)
    .bind(request_ids)
    .bind(request_bytes)
    .bind(response_bytes)
    .bind(error_codes)
    .bind(headers)
    .execute(pool)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// logs.list
