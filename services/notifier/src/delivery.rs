//! One delivery attempt with its bookkeeping in the `notifier` schema:
//!
//! 1. the notification's row (keyed by the idempotency key) is created, or found — a
//!    `delivered` one means a redelivered message: nothing is sent again;
//! 2. one call to SuprSend, logged in `delivery_attempts` (outcome, status, latency, body);
//! 3. the answer becomes the handler's result: accepted → ack; 429/5xx/timeout → retry (not
//!    before `Retry-After`); another 4xx → dead letter now, with SuprSend's response body.

use bus::{HandlerError, Meta};
use uuid::Uuid;

use crate::NotifierState;
use crate::suprsend::{Answer, UserProfile, WorkflowTrigger};

/// What to send.
#[derive(Debug, Clone)]
pub enum Request {
    Trigger(WorkflowTrigger),
    Identify {
        distinct_id: String,
        profile: UserProfile,
    },
}

impl Request {
    fn kind(&self) -> &'static str {
        match self {
            Self::Trigger(_) => "workflow",
            Self::Identify { .. } => "identify",
        }
    }

    fn workflow(&self) -> Option<&str> {
        match self {
            Self::Trigger(trigger) => Some(&trigger.workflow),
            Self::Identify { .. } => None,
        }
    }

    fn distinct_id(&self) -> String {
        match self {
            Self::Trigger(trigger) => trigger
                .recipients
                .iter()
                .map(|recipient| recipient.distinct_id.as_str())
                .collect::<Vec<_>>()
                .join(","),
            Self::Identify { distinct_id, .. } => distinct_id.clone(),
        }
    }
}

/// The `$idempotency_key` for the message that asked for a notification: its name and its
/// bus message id (the outbox id), stable across every redelivery and re-drive.
pub fn idempotency_key(message_name: &str, meta: &Meta) -> String {
    format!("{message_name}:{}", meta.message_id)
}

/// Make one attempt at `request` for the message `meta` (see the module docs).
pub async fn deliver(
    state: &NotifierState,
    meta: &Meta,
    key: &str,
    request: &Request,
) -> Result<(), HandlerError> {
    sqlx::query(
        "INSERT INTO notifications (idempotency_key, message_id, kind, workflow, distinct_id)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(key)
    .bind(&meta.message_id)
    .bind(request.kind())
    .bind(request.workflow())
    .bind(request.distinct_id())
    .execute(&state.db)
    .await?;
    let Some(client) = &state.suprsend else {
        sqlx::query(
            "UPDATE notifications SET status = 'skipped', updated_at = now()
              WHERE idempotency_key = $1 AND status <> 'delivered'",
        )
        .bind(key)
        .execute(&state.db)
        .await?;
        tracing::info!(
            idempotency_key = key,
            "SUPRSEND_API_KEY unset: notification recorded, not sent"
        );
        return Ok(());
    };
    // Count the attempt, unless it was delivered already (a redelivered message).
    let attempt: Option<i32> = sqlx::query_scalar(
        "UPDATE notifications SET attempts = attempts + 1, updated_at = now()
          WHERE idempotency_key = $1 AND status <> 'delivered'
          RETURNING attempts",
    )
    .bind(key)
    .fetch_optional(&state.db)
    .await?;
    let Some(attempt) = attempt else {
        tracing::info!(idempotency_key = key, "already delivered; not sent again");
        return Ok(());
    };
    let sent = match request {
        Request::Trigger(trigger) => client.trigger(trigger).await,
        Request::Identify {
            distinct_id,
            profile,
        } => client.identify(distinct_id, profile).await,
    };
    let latency_ms = i32::try_from(sent.latency.as_millis()).unwrap_or(i32::MAX);
    let status = sent.answer.status().map(|status| status as i16);
    let last_attempt = meta.attempt > state.retry_limit;
    let notification_status = match &sent.answer {
        Answer::Accepted { .. } => "delivered",
        Answer::Rejected { .. } => "rejected",
        _ if last_attempt => "failed",
        _ => "retrying",
    };
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "INSERT INTO delivery_attempts (delivery_attempt_id, idempotency_key, attempt, outcome,
                                        http_status, latency_ms, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(key)
    .bind(attempt)
    .bind(sent.answer.outcome())
    .bind(status)
    .bind(latency_ms)
    .bind(sent.answer.detail())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE notifications SET status = $2, last_http_status = coalesce($3, last_http_status),
                delivered_at = CASE WHEN $2 = 'delivered' THEN now() END, updated_at = now()
          WHERE idempotency_key = $1",
    )
    .bind(key)
    .bind(notification_status)
    .bind(status)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    metrics::counter!("notifier_attempts_total", "kind" => request.kind(), "outcome" => sent.answer.outcome())
        .increment(1);
    metrics::histogram!("notifier_attempt_duration_seconds", "kind" => request.kind())
        .record(sent.latency.as_secs_f64());
    match sent.answer {
        Answer::Accepted { status } => {
            tracing::info!(
                idempotency_key = key,
                status,
                latency_ms,
                "SuprSend accepted"
            );
            Ok(())
        }
        Answer::Rejected { status, body } => Err(HandlerError::permanent(format!(
            "SuprSend answered {status}: {body}"
        ))),
        Answer::Retryable {
            status,
            retry_after: Some(delay),
            body,
        } => Err(HandlerError::retry_after(
            format!(
                "SuprSend answered {status} (retry after {} s): {body}",
                delay.as_secs()
            ),
            delay,
        )),
        Answer::Retryable { status, body, .. } => Err(HandlerError::retry(format!(
            "SuprSend answered {status}: {body}"
        ))),
        Answer::Timeout => Err(HandlerError::retry("SuprSend did not answer in time")),
        Answer::Network(error) => Err(HandlerError::retry(format!(
            "SuprSend unreachable: {error}"
        ))),
    }
}
