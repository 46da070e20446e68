//! The daily retention purge of the bus's own tables. Every service runs it for its own schema
//! when the cron service's `retention.purge_due` event arrives. The relay deletes the rows it
//! publishes; rows marked sent by a relay of an earlier release are pruned here and by the
//! relay as it goes (this is the scheduled, recorded pass that also covers an idle relay).

use std::time::Duration;

use sqlx::PgPool;

use crate::relay;

/// How long the bus's rows are kept.
#[derive(Debug, Clone, Copy)]
pub struct BusRetention {
    /// Outbox rows marked sent by an earlier release's relay (default 24 h, as the relay's
    /// own pruning).
    pub outbox: Duration,
    /// Idempotency records (default 30 days): longer than any stream keeps a message (TASKS
    /// 14 days), so no redelivery can outlive its record.
    pub processed_messages: Duration,
}

impl Default for BusRetention {
    fn default() -> Self {
        Self {
            outbox: Duration::from_secs(24 * 3600),
            processed_messages: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// What one purge deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub outbox_rows: u64,
    pub processed_messages: u64,
}

/// Delete outbox rows marked sent and idempotency records past `retention`, in chunks.
pub async fn purge(pool: &PgPool, retention: BusRetention) -> Result<Purged, sqlx::Error> {
    let outbox_rows = relay::prune(pool, retention.outbox).await?;
    let mut processed_messages = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM processed_messages WHERE ctid IN (
                SELECT ctid FROM processed_messages
                 WHERE processed_at < now() - make_interval(secs => $1)
                 LIMIT 5000)",
        )
        .bind(retention.processed_messages.as_secs_f64())
        .execute(pool)
        .await?
        .rows_affected();
        processed_messages += deleted;
        if deleted < 5000 {
            break;
        }
    }
    Ok(Purged {
        outbox_rows,
        processed_messages,
    })
}
