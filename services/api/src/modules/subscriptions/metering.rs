//! Metering of the open API: every request counts against the API team's monthly quota
//! (its subscription's current period), atomically in Postgres so that any number of api
//! replicas share one count; a per-key requests-per-second limit (per plan) guards bursts.
//!
//! The quota check and the count are one `UPDATE … WHERE usage_count < quota`: concurrent
//! requests can never push the count past the quota, and a refused request is not counted.
//! A replica counts the concurrent requests of one team in one such update ([`QuotaCounter`]).
//! The same statement reads the plan (a plan change applies to the next request, on every
//! replica) and the team's API access switch (a disabled team is refused at once, everywhere:
//! `403 API_ACCESS_DISABLED`).
//!
//! When a period ends, [`roll_over`] copies it with its count into
//! `subscription_usage_periods` and writes `subscription.period_closed`, in the transaction
//! that resets the count, so no period's usage is lost.

use domain::ids::{ApiKeyId, ApiTeamId, SubscriptionId, TeamId};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use messages::journal::v1::SubscriptionPeriodClosed;
use sqlx::{Acquire, PgConnection, PgPool};
use tokio::sync::oneshot;

use crate::http::error::ApiError;

/// The quota state after counting one request, for the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// The plan's requests per period.
    pub limit: i64,
    /// Requests counted in the current period, this one included when it was counted.
    pub used: i64,
    /// When the period ends and the count starts again.
    pub resets_at: DateTime<Utc>,
    /// The quota was already used up: the request was refused and not counted.
    pub exceeded: bool,
}

impl Usage {
    pub fn remaining(&self) -> i64 {
        (self.limit - self.used).max(0)
    }

    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (epoch seconds,
    /// as GitHub's and most APIs' headers), on every open API response.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let values = [
            ("x-ratelimit-limit", self.limit),
            ("x-ratelimit-remaining", self.remaining()),
            ("x-ratelimit-reset", self.resets_at.timestamp()),
        ];
        for (name, value) in values {
            headers.insert(name, HeaderValue::from(value));
        }
    }

    /// Seconds until the period resets (at least 1): the `Retry-After` of a 429
    /// `USAGE_EXCEEDED`.
    pub fn retry_after_seconds(&self, now: DateTime<Utc>) -> u64 {
        u64::try_from((self.resets_at - now).num_seconds())
            .unwrap_or(0)
            .max(1)
    }
}

/// Count one request of `api_team_id` against its quota. A period that has ended is rolled
/// over first (the scheduled [`roll_over_periods`] normally got there before).
pub async fn count_request(
    conn: &mut PgConnection,
    api_team_id: ApiTeamId,
) -> Result<Usage, ApiError> {
    let counted = count_requests(conn, api_team_id, 1).await?;
    Ok(counted.usage_of(0))
}

/// What counting `requested` requests at once granted: the first `granted` of them are
/// counted (and admitted), the rest are refused and not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// The count before these requests.
    pub counted_before: i64,
    pub granted: i64,
    pub limit: i64,
    pub resets_at: DateTime<Utc>,
}

impl Counted {
    /// The usage the `index`-th request (0-based, in arrival order) sees.
    pub fn usage_of(&self, index: i64) -> Usage {
        if index < self.granted {
            Usage {
                limit: self.limit,
                used: self.counted_before + index + 1,
                resets_at: self.resets_at,
                exceeded: false,
            }
        } else {
            Usage {
                limit: self.limit,
                used: self.counted_before + self.granted,
                resets_at: self.resets_at,
                exceeded: true,
            }
        }
    }
}

#[derive(sqlx::FromRow)]
struct CountedRow {
    counted_before: i64,
    granted: i64,
    monthly_request_quota: i64,
    period_end: DateTime<Utc>,
}

/// Count `requested` requests of `api_team_id` in one statement: as many as the quota has
/// room for are granted; the count never passes the quota, however many replicas count at
/// once (the row lock orders them). A period that has ended is rolled over first.
pub async fn count_requests(
    conn: &mut PgConnection,
    api_team_id: ApiTeamId,
    requested: i64,
) -> Result<Counted, ApiError> {
    // At most twice: the second pass follows a rollover.
    for _ in 0..2 {
        // The CTE locks the row and reads the count the update starts from, so the statement
        // can say how many of the requests it granted. A team whose API access is disabled
        // matches nothing here and is told so below.
        let counted: Option<CountedRow> = sqlx::query_as(
            "WITH current AS (
                SELECT s.subscription_id, s.usage_count, p.monthly_request_quota,
                       LEAST($2, p.monthly_request_quota - s.usage_count) AS granted
                  FROM subscriptions s
                  JOIN plans p ON p.plan_id = s.plan_id
                  JOIN api_teams a ON a.api_team_id = s.api_team_id
                 WHERE s.api_team_id = $1
                   AND a.api_access_disabled_at IS NULL
                   AND s.usage_count < p.monthly_request_quota
                   AND s.period_end > now()
                   FOR UPDATE OF s)
             UPDATE subscriptions s
                SET usage_count = s.usage_count + c.granted, updated_at = now()
               FROM current c
              WHERE s.subscription_id = c.subscription_id
          RETURNING c.usage_count AS counted_before, c.granted, c.monthly_request_quota,
                    s.period_end",
        )
        .bind(api_team_id)
        .bind(requested)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(counted) = counted {
            return Ok(Counted {
                counted_before: counted.counted_before,
                granted: counted.granted,
                limit: counted.monthly_request_quota,
                resets_at: counted.period_end,
            });
        }
        // Nothing counted: access is disabled, the quota is used up, or the period has ended.
        let current: Option<(i64, i64, DateTime<Utc>, bool, bool)> = sqlx::query_as(
            "SELECT s.usage_count, p.monthly_request_quota, s.period_end, s.period_end <= now(),
                    a.api_access_disabled_at IS NOT NULL
               FROM subscriptions s
               JOIN plans p ON p.plan_id = s.plan_id
               JOIN api_teams a ON a.api_team_id = s.api_team_id
              WHERE s.api_team_id = $1",
        )
        .bind(api_team_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((usage_count, limit, resets_at, ended, disabled)) = current else {
            return Err(ApiError::forbidden("This team has no API subscription"));
        };
        if disabled {
            return Err(api_access_disabled());
        }
        if ended {
            roll_over(&mut *conn, Some(api_team_id)).await?;
            continue;
        }
        return Ok(Counted {
            counted_before: usage_count,
            granted: 0,
            limit,
            resets_at,
        });
    }
    Err(ApiError::Internal(
        "the subscription period did not roll over".to_owned(),
    ))
}

/// `403 API_ACCESS_DISABLED`: the key is good, but an owner or admin has switched the team's
/// open API access off (`subscriptions.disableApiAccess`).
pub fn api_access_disabled() -> ApiError {
    ApiError::defined(
        "API_ACCESS_DISABLED",
        axum::http::StatusCode::FORBIDDEN,
        "API access is disabled for this team; an owner or admin of the team can enable it again",
    )
}

/// Counts requests like [`count_request`], coalescing the concurrent requests of one API
/// team on this replica into one `UPDATE` (the way Postgres groups commits): while a
/// team's update is in flight, its next requests queue up and the following update counts
/// them all. Every request still waits until its count is committed, the quota stays exact
/// and the grants follow arrival order. Without this, a busy team's requests would queue
/// on its subscription row's lock, one commit after the other.
#[derive(Default)]
pub struct QuotaCounter {
    teams: Mutex<HashMap<ApiTeamId, Arc<Mutex<TeamQueue>>>>,
}

#[derive(Default)]
struct TeamQueue {
    waiting: Vec<oneshot::Sender<Result<Usage, ApiError>>>,
    /// A flush task is running for this team; it takes whatever is waiting.
    flushing: bool,
}

impl QuotaCounter {
    pub async fn count(&self, pool: &PgPool, api_team_id: ApiTeamId) -> Result<Usage, ApiError> {
        let (sender, receiver) = oneshot::channel();
        let queue = {
            let mut teams = lock(&self.teams);
            Arc::clone(teams.entry(api_team_id).or_default())
        };
        let start_flush = {
            let mut team = lock(&queue);
            team.waiting.push(sender);
            !std::mem::replace(&mut team.flushing, true)
        };
        if start_flush {
            // Its own task: the count is committed even if this request goes away.
            tokio::spawn(flush(pool.clone(), api_team_id, queue));
        }
        receiver.await.unwrap_or_else(|_| {
            Err(ApiError::Internal(
                "the quota count was abandoned".to_owned(),
            ))
        })
    }

    /// Forget teams with nothing in flight (bounded memory).
    pub fn retain_busy(&self) {
        lock(&self.teams).retain(|_, queue| lock(queue).flushing);
    }
}

async fn flush(pool: PgPool, api_team_id: ApiTeamId, queue: Arc<Mutex<TeamQueue>>) {
    loop {
        let waiting = {
            let mut team = lock(&queue);
            if team.waiting.is_empty() {
                team.flushing = false;
                return;
            }
            std::mem::take(&mut team.waiting)
        };
        let requested = i64::try_from(waiting.len()).unwrap_or(i64::MAX);
        let counted = match pool.acquire().await {
            Ok(mut conn) => count_requests(&mut conn, api_team_id, requested).await,
            Err(error) => Err(error.into()),
        };
        match counted {
            Ok(counted) => {
                for (index, sender) in (0..).zip(waiting) {
                    let _ = sender.send(Ok(counted.usage_of(index)));
                }
            }
            // A team without a subscription or with its access disabled is refused as such;
            // anything else is ours.
            Err(ApiError::Forbidden(message)) => {
                for sender in waiting {
                    let _ = sender.send(Err(ApiError::Forbidden(message.clone())));
                }
            }
            Err(ApiError::Defined {
                code,
                status,
                message,
                data,
            }) => {
                for sender in waiting {
                    let _ = sender.send(Err(ApiError::Defined {
                        code,
                        status,
                        message: message.clone(),
                        data: data.clone(),
                    }));
                }
            }
            Err(error) => {
                tracing::warn!(%error, %api_team_id, "counting open API requests failed");
                let unavailable = matches!(error, ApiError::Unavailable(_));
                for sender in waiting {
                    let cause = error.to_string();
                    let _ = sender.send(Err(if unavailable {
                        ApiError::Unavailable(cause)
                    } else {
                        ApiError::Internal(cause)
                    }));
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Start a new period for every subscription whose period has ended: the first period that
/// contains now, counted in whole months from the old start, with a zero count. The period
/// that ended goes to the usage history with its count, and `subscription.period_closed` is
/// written, in the same transaction. Idempotent: a second run (another replica, a retried
/// task) finds nothing to do. Returns how many subscriptions rolled over. The cron service
/// schedules it.
pub async fn roll_over_periods(pool: &PgPool) -> Result<u64, ApiError> {
    let mut conn = pool.acquire().await?;
    roll_over(&mut conn, None).await
}

/// Roll over one API team's subscription if its period has ended (before reading or changing
/// it: a late scheduled task must not show or bill an ended period as current). Inside a
/// caller's transaction this is a savepoint of it.
pub async fn roll_over_team(
    conn: &mut PgConnection,
    api_team_id: ApiTeamId,
) -> Result<u64, ApiError> {
    roll_over(conn, Some(api_team_id)).await
}

#[derive(sqlx::FromRow)]
struct ClosedPeriod {
    subscription_id: SubscriptionId,
    api_team_id: ApiTeamId,
    team_id: TeamId,
    plan_id: String,
    monthly_request_quota: i64,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    usage_count: i64,
}

async fn roll_over(
    conn: &mut PgConnection,
    api_team_id: Option<ApiTeamId>,
) -> Result<u64, ApiError> {
    let mut tx = conn.begin().await?;
    // `ended` locks the rows (a concurrent rollover waits, then finds the period current and
    // skips the row) and keeps the old period for the history. `age` counts whole calendar
    // months; adding months clamps to the month's last day (a period from the 31st ends on
    // the 30th, 28th/29th in February). The new period never starts before the old one ended
    // (a period shorter than a month, as tests force, must not overlap the next).
    let closed: Vec<ClosedPeriod> = sqlx::query_as(
        "WITH ended AS (
            SELECT s.subscription_id, s.api_team_id, s.plan_id, s.period_start, s.period_end,
                   s.usage_count,
                   (extract(year FROM age(now(), s.period_start)) * 12
                    + extract(month FROM age(now(), s.period_start)))::int AS months
              FROM subscriptions s
             WHERE s.period_end <= now() AND ($1::uuid IS NULL OR s.api_team_id = $1)
               FOR UPDATE OF s),
         rolled AS (
            UPDATE subscriptions s
               SET period_start = greatest(e.period_start + make_interval(months => e.months),
                                           e.period_end),
                   period_end = e.period_start + make_interval(months => e.months + 1),
                   usage_count = 0,
                   updated_at = now()
              FROM ended e
             WHERE s.subscription_id = e.subscription_id
         RETURNING s.subscription_id),
         recorded AS (
            INSERT INTO subscription_usage_periods
                   (subscription_id, period_start, period_end, plan_id, monthly_request_quota,
                    usage_count)
            SELECT e.subscription_id, e.period_start, e.period_end, e.plan_id,
                   p.monthly_request_quota, e.usage_count
              FROM ended e
              JOIN rolled r ON r.subscription_id = e.subscription_id
              JOIN plans p ON p.plan_id = e.plan_id
            ON CONFLICT (subscription_id, period_start) DO NOTHING
         RETURNING subscription_id, period_start, period_end, plan_id, monthly_request_quota,
                   usage_count)
         SELECT c.subscription_id, e.api_team_id, a.team_id, c.plan_id, c.monthly_request_quota,
                c.period_start, c.period_end, c.usage_count
           FROM recorded c
           JOIN ended e ON e.subscription_id = c.subscription_id
           JOIN api_teams a ON a.api_team_id = e.api_team_id",
    )
    .bind(api_team_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut outbox = bus::outbox::OutboxBatch::new();
    for period in &closed {
        // Ordered by API team, with the plan changes: a consumer sees them in order.
        outbox.push_ordered(
            &SubscriptionPeriodClosed {
                subscription_id: period.subscription_id.to_string(),
                api_team_id: period.api_team_id.to_string(),
                team_id: period.team_id.to_string(),
                plan_id: period.plan_id.clone(),
                monthly_request_quota: period.monthly_request_quota,
                period_start_ms: period.period_start.timestamp_millis(),
                period_end_ms: period.period_end.timestamp_millis(),
                usage_count: period.usage_count,
            },
            &period.api_team_id.to_string(),
        );
    }
    if !closed.is_empty() {
        outbox.write(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(closed.len() as u64)
}

// ---------------------------------------------------------------------------------------------
// Per-key request rate

/// Requests per second per key, by plan. One keyed limiter per distinct rate (plans share
/// a limiter when their rates are equal); keys are API key ids. Per replica: N replicas let
/// a key through at up to N× its rate (the monthly quota, in Postgres, is exact).
#[derive(Default)]
pub struct KeyRateLimiter {
    by_rate: Mutex<HashMap<u32, Arc<DefaultKeyedRateLimiter<ApiKeyId>>>>,
}

impl KeyRateLimiter {
    /// `Err(retry_after_seconds)` (whole seconds, at least 1) when the key is over its
    /// rate: the open API answers 429 `RATE_LIMITED` with that `Retry-After`.
    pub fn check(&self, api_key_id: ApiKeyId, requests_per_second: u32) -> Result<(), u64> {
        let limiter = self.limiter(requests_per_second);
        limiter.check_key(&api_key_id).map_err(|not_until| {
            not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs()
                .max(1)
        })
    }

    fn limiter(&self, requests_per_second: u32) -> Arc<DefaultKeyedRateLimiter<ApiKeyId>> {
        let rate = NonZeroU32::new(requests_per_second).unwrap_or(NonZeroU32::MIN);
        let mut by_rate = self
            .by_rate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            by_rate
                .entry(rate.get())
                .or_insert_with(|| Arc::new(RateLimiter::keyed(Quota::per_second(rate)))),
        )
    }

    /// Forget keys idle long enough to have a full bucket again (bounded memory).
    pub fn retain_recent(&self) {
        let by_rate = self
            .by_rate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for limiter in by_rate.values() {
            limiter.retain_recent();
        }
    }
}

/// How often [`KeyRateLimiter::retain_recent`] should run.
pub const RATE_LIMITER_SWEEP: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests;
