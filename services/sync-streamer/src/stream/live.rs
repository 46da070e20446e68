//! One client's stream once open: the catch-up, the handoff gap, the live loop, and writing
//! frames (SSE or oRPC event iterator). Taking changesets and sending whole transactions is in
//! `transactions.rs`.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use domain::ids::TeamId;
use sync_protocol::SyncClaims;
use sync_protocol::changes::Scope;
use sync_protocol::cursor::Cursor;
use tokio::sync::mpsc;

use super::transactions::{Assembly, RecentVersions};
use super::{Flavor, StreamState, now_ms};
use crate::catchup::{CatchUp, PinnedRow, Row};
use crate::hub::{self, Next, Registration};
use sync_protocol::frames::{CloseReason, Frame};

/// The client went away.
pub(super) struct Gone;

pub(super) enum Flow {
    Continue,
    Stop,
}

pub(super) struct Connection {
    pub(super) state: StreamState,
    pub(super) claims: SyncClaims,
    pub(super) registration: Registration,
    pub(super) user_scope: String,
    /// The teams whose rows this client receives.
    pub(super) effective: HashSet<TeamId>,
    pub(super) tables: Option<Vec<String>>,
    /// The last cursor sent (or the client's own): what the client holds.
    pub(super) cursor: Cursor,
    /// The highest sequence taken from the handoff gap or the queue: where the cursor goes
    /// once no transaction waits for parts.
    pub(super) taken: u64,
    /// Transactions waiting for more of the parts the client follows, oldest first.
    pub(super) assembling: Vec<Assembly>,
    /// Transactions recently sent (whole or not): a late part of one goes out alone at once.
    pub(super) finished: VecDeque<String>,
    /// Row versions recently sent live: none goes out twice.
    pub(super) sent_versions: RecentVersions,
    pub(super) flavor: Flavor,
    pub(super) sender: mpsc::Sender<Bytes>,
    pub(super) retry_sent: bool,
}

impl Connection {
    pub(super) async fn run(
        mut self,
        watermark: u64,
        reset: bool,
        removed: Vec<TeamId>,
        full_resend: HashSet<TeamId>,
        pinned: Vec<PinnedRow>,
    ) {
        let _ = self
            .serve(watermark, reset, removed, full_resend, pinned)
            .await;
    }

    async fn serve(
        &mut self,
        watermark: u64,
        reset: bool,
        removed: Vec<TeamId>,
        full_resend: HashSet<TeamId>,
        pinned: Vec<PinnedRow>,
    ) -> Result<(), Gone> {
        self.write(Bytes::from_static(b": \n\n")).await?;
        if reset {
            self.send(
                &Frame::Reset {
                    reason: "cursor_expired",
                }
                .to_json(),
                None,
            )
            .await?;
        }
        for team_id in removed {
            let cursor = self.cursor.to_string();
            let frame = Frame::ScopeRemoved {
                scope: Scope::Team(team_id).key(),
                team_id: team_id.to_string(),
                cursor: cursor.clone(),
            };
            self.send(&frame.to_json(), Some(&cursor)).await?;
        }
        // Catch-up, holding one of a bounded number of permits.
        let mut scopes = vec![(self.user_scope.clone(), self.cursor.clone())];
        for team_id in &self.effective {
            let after = if full_resend.contains(team_id) {
                Cursor::default()
            } else {
                self.cursor.clone()
            };
            scopes.push((Scope::Team(*team_id).key(), after));
        }
        let catch_up = CatchUp::new(
            scopes,
            watermark,
            self.state.config.chunk_rows,
            self.cursor.resumes(),
            self.tables.clone(),
            pinned,
        );
        // Boxed: the catch-up's (and the gap's) futures are large and needed once; inline,
        // every idle stream's task would keep room for them (memory per connection).
        match Box::pin(self.catch_up(catch_up, watermark)).await {
            Ok(flow) => {
                if matches!(flow, Flow::Stop) {
                    return Ok(());
                }
            }
            Err(CatchUpError::Gone) => return Err(Gone),
            Err(CatchUpError::Failed(error)) => {
                tracing::warn!(%error, "catch-up failed; closing the stream");
                return Ok(());
            }
        }
        // Between the watermark and the hub's position at registration.
        let position = self.registration.position;
        if position > self.cursor.through() {
            let from = self.cursor.through() + 1;
            let gap = match self.state.hub.range(from, position) {
                Some(gap) => gap,
                None => match Box::pin(hub::read_range(
                    &self.state.jetstream,
                    &self.state.changes_stream,
                    from,
                    position,
                ))
                .await
                {
                    Ok(gap) => gap,
                    Err(error) => {
                        tracing::warn!(%error, "reading the handoff gap from JetStream failed; closing");
                        return Ok(());
                    }
                },
            };
            for changeset in gap {
                if matches!(Box::pin(self.take(changeset)).await?, Flow::Stop) {
                    return Ok(());
                }
            }
        }
        self.live_loop().await
    }

    /// Whether `scope` is one this client registered for (its own, its token's teams): the
    /// hub hands it that scope's changesets.
    pub(super) fn follows(&self, scope: &str) -> bool {
        scope == self.user_scope
            || matches!(Scope::parse(scope), Some(Scope::Team(team_id)) if self.claims.team_ids.contains(&team_id))
    }

    async fn catch_up(
        &mut self,
        mut catch_up: CatchUp,
        watermark: u64,
    ) -> Result<Flow, CatchUpError> {
        let permit = tokio::select! {
            permit = Arc::clone(&self.state.catchups).acquire_owned() => permit.map_err(|error| CatchUpError::Failed(error.to_string()))?,
            () = self.state.shutdown.cancelled() => {
                self.close(CloseReason::Shutdown).await.map_err(|Gone| CatchUpError::Gone)?;
                return Ok(Flow::Stop);
            }
        };
        let db = self.state.db.clone();
        let final_cursor = self.cursor.advanced(watermark);
        let mut current = catch_up
            .next_page(&db)
            .await
            .map_err(|error| CatchUpError::Failed(error.to_string()))?;
        loop {
            let next = match current {
                Some(_) => catch_up
                    .next_page(&db)
                    .await
                    .map_err(|error| CatchUpError::Failed(error.to_string()))?,
                None => None,
            };
            let last_page = next.is_none();
            match &current {
                Some(page) => self
                    .send_page(page, last_page, &final_cursor)
                    .await
                    .map_err(|Gone| CatchUpError::Gone)?,
                None => {
                    let frame = Frame::Delta {
                        table: None,
                        data: Vec::new(),
                        is_last_chunk: true,
                        cursor: final_cursor.to_string(),
                    };
                    self.send(&frame.to_json(), Some(&final_cursor.to_string()))
                        .await
                        .map_err(|Gone| CatchUpError::Gone)?;
                }
            }
            if self.state.shutdown.is_cancelled() {
                self.close(CloseReason::Shutdown)
                    .await
                    .map_err(|Gone| CatchUpError::Gone)?;
                return Ok(Flow::Stop);
            }
            if last_page {
                break;
            }
            current = next;
        }
        drop(permit);
        self.taken = self.taken.max(final_cursor.through());
        self.cursor = final_cursor;
        Ok(Flow::Continue)
    }

    /// One page as `delta` frames, one per table. Only the page's last frame carries the
    /// page's cursor: a client that stops between frames resumes from the previous page.
    async fn send_page(
        &mut self,
        page: &[Row],
        last_page: bool,
        final_cursor: &Cursor,
    ) -> Result<(), Gone> {
        let mut groups: Vec<(&str, Vec<&serde_json::value::RawValue>)> = Vec::new();
        for row in page {
            match groups.iter_mut().find(|(table, _)| *table == row.table) {
                Some((_, rows)) => rows.push(&row.data),
                None => groups.push((&row.table, vec![&row.data])),
            }
        }
        let page_cursor = if last_page {
            final_cursor.clone()
        } else {
            let page_end = page.iter().map(|row| row.seq).max().unwrap_or_default();
            self.cursor.advanced(page_end)
        };
        let count = groups.len();
        for (index, (table, rows)) in groups.into_iter().enumerate() {
            let last_of_page = index + 1 == count;
            let cursor = if last_of_page {
                page_cursor.to_string()
            } else {
                self.cursor.to_string()
            };
            let frame = Frame::Delta {
                table: Some(table),
                data: rows,
                is_last_chunk: last_page && last_of_page,
                cursor: cursor.clone(),
            };
            self.send(&frame.to_json(), Some(&cursor)).await?;
        }
        self.cursor = page_cursor;
        Ok(())
    }

    async fn live_loop(&mut self) -> Result<(), Gone> {
        let heartbeat = self.state.config.heartbeat;
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        let expires_in = Duration::from_millis((self.claims.expires_at - now_ms()).max(0) as u64);
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        let queue = Arc::clone(&self.registration.queue);
        loop {
            // The oldest waiting transaction goes out as far as it got when its wait ends.
            let waiting_until = self.assembling.first().map(|assembly| assembly.deadline);
            let waited = async move {
                match waiting_until {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                next = queue.next() => match next {
                    Next::Changesets(changesets) => {
                        for changeset in changesets {
                            if let Flow::Stop = Box::pin(self.take(changeset)).await? {
                                return Ok(());
                            }
                        }
                        queue.sent();
                    }
                    Next::Closed(reason) => return self.close(reason).await,
                },
                () = waited => {
                    if let Flow::Stop = self.give_up_oldest_wait("did not arrive in time").await? {
                        return Ok(());
                    }
                }
                _ = ticker.tick() => {
                    let frame = Frame::Heartbeat { timestamp: now_ms() };
                    let cursor = self.cursor.to_string();
                    self.send(&frame.to_json(), Some(&cursor)).await?;
                }
                () = &mut expiry => return self.close(CloseReason::TokenExpired).await,
                () = self.state.shutdown.cancelled() => return self.close(CloseReason::Shutdown).await,
                () = self.sender.closed() => return Err(Gone),
            }
        }
    }

    // Taking changesets and delivering transactions: `transactions.rs`.

    pub(super) async fn wait_for_watermark(&self, seq: u64) {
        for _ in 0..100 {
            let watermark: Result<Option<i64>, _> =
                sqlx::query_scalar("SELECT watermark FROM materializer_state")
                    .fetch_optional(&self.state.db)
                    .await;
            if matches!(watermark, Ok(Some(watermark)) if watermark as u64 >= seq) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(super) async fn close(&mut self, reason: CloseReason) -> Result<(), Gone> {
        self.send(&Frame::Closed { reason }.to_json(), None).await?;
        if self.flavor == Flavor::Orpc {
            self.write(Bytes::from_static(b"event: done\ndata: {}\n\n"))
                .await?;
        }
        Ok(())
    }

    pub(super) async fn send(&mut self, json: &str, id: Option<&str>) -> Result<(), Gone> {
        let mut event = String::with_capacity(json.len() + 64);
        if self.flavor == Flavor::Orpc {
            event.push_str("event: message\n");
        }
        if !self.retry_sent || self.flavor == Flavor::Orpc {
            event.push_str("retry: ");
            event.push_str(&self.state.config.retry_ms.to_string());
            event.push('\n');
            self.retry_sent = true;
        }
        if let Some(id) = id {
            event.push_str("id: ");
            event.push_str(id);
            event.push('\n');
        }
        event.push_str("data: ");
        if self.flavor == Flavor::Orpc {
            event.push_str("{\"json\":");
            event.push_str(json);
            event.push('}');
        } else {
            event.push_str(json);
        }
        event.push_str("\n\n");
        self.write(Bytes::from(event)).await
    }

    async fn write(&self, bytes: Bytes) -> Result<(), Gone> {
        self.sender.send(bytes).await.map_err(|_| Gone)
    }
}

enum CatchUpError {
    Gone,
    Failed(String),
}
