//! One SSE client on the sync-streamer (docs/sync.md): it reads the catch-up, then records,
//! for every live `change` frame that inserts a `journal_entries` row, the row's `createdAt`
//! and how long after it the frame arrived.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures::StreamExt as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the client saw.
#[derive(Debug, Default)]
pub struct Arrivals {
    /// (entry `createdAt` in ms since the epoch, frame arrival − `createdAt` in µs).
    pub samples: Vec<(i64, u64)>,
    /// Why the stream ended before it was stopped, if it did.
    pub ended: Option<String>,
}

pub struct SseClient {
    arrivals: Arc<Mutex<Arrivals>>,
    stop: CancellationToken,
    reader: JoinHandle<()>,
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
        })
}

/// What one `data:` frame means to the client.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// The catch-up's last frame: live changes follow.
    CatchUpDone,
    /// `createdAt` (ms) of every `journal_entries` row the frame inserts.
    EntriesInserted(Vec<i64>),
    /// The server ends the stream, with its reason.
    Closed(String),
    Other,
}

pub fn parse_frame(data: &str) -> Frame {
    let Ok(frame) = serde_json::from_str::<serde_json::Value>(data) else {
        return Frame::Other;
    };
    match frame["type"].as_str() {
        Some("delta") if frame["isLastChunk"] == true => Frame::CatchUpDone,
        Some("change") => Frame::EntriesInserted(
            frame["changes"]
                .as_array()
                .map(|changes| {
                    changes
                        .iter()
                        .filter(|change| {
                            change["table"] == "journal_entries" && change["op"] == "insert"
                        })
                        .filter_map(|change| change["data"]["createdAt"].as_i64())
                        .collect()
                })
                .unwrap_or_default(),
        ),
        Some("closed") => Frame::Closed(frame["reason"].as_str().unwrap_or("?").to_owned()),
        _ => Frame::Other,
    }
}

impl SseClient {
    /// Open `GET /sync/stream` with `sync_token` and return once the catch-up has been read.
    pub async fn attach(streamer_url: &str, sync_token: &str) -> anyhow::Result<Self> {
        let response = reqwest::Client::new()
            .get(format!("{streamer_url}/sync/stream"))
            .bearer_auth(sync_token)
            .send()
            .await
            .context("opening the sync stream")?
            .error_for_status()
            .context("opening the sync stream")?;
        let arrivals = Arc::new(Mutex::new(Arrivals::default()));
        let stop = CancellationToken::new();
        let (live_tx, live_rx) = oneshot::channel();
        let reader = tokio::spawn(read(response, Arc::clone(&arrivals), stop.clone(), live_tx));
        match tokio::time::timeout(Duration::from_secs(30), live_rx).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => anyhow::bail!("the sync stream ended during its catch-up"),
            Err(_) => anyhow::bail!("the sync stream's catch-up did not end within 30 s"),
        }
        Ok(Self {
            arrivals,
            stop,
            reader,
        })
    }

    /// Stop reading and hand over what arrived.
    pub async fn finish(self) -> Arrivals {
        self.stop.cancel();
        let _ = self.reader.await;
        match Arc::try_unwrap(self.arrivals) {
            Ok(mutex) => mutex
                .into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            Err(shared) => {
                let mut guard = shared
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                std::mem::take(&mut *guard)
            }
        }
    }
}

async fn read(
    response: reqwest::Response,
    arrivals: Arc<Mutex<Arrivals>>,
    stop: CancellationToken,
    live_tx: oneshot::Sender<()>,
) {
    let mut live_tx = Some(live_tx);
    let mut body = response.bytes_stream();
    let mut buffer = Vec::<u8>::new();
    let ended = loop {
        let chunk = tokio::select! {
            chunk = body.next() => chunk,
            () = stop.cancelled() => break None,
        };
        let chunk = match chunk {
            Some(Ok(chunk)) => chunk,
            Some(Err(error)) => break Some(format!("read error: {error}")),
            None => break Some("the server ended the stream".to_owned()),
        };
        // Stamp before parsing: the frame arrived now.
        let arrived_us = now_micros();
        buffer.extend_from_slice(&chunk);
        let mut closed = None;
        while let Some(end) = buffer.windows(2).position(|pair| pair == b"\n\n") {
            let event: Vec<u8> = buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            for data in text.lines().filter_map(|line| line.strip_prefix("data:")) {
                match parse_frame(data.trim_start()) {
                    Frame::CatchUpDone => {
                        if let Some(live) = live_tx.take() {
                            let _ = live.send(());
                        }
                    }
                    Frame::EntriesInserted(created) if !created.is_empty() => {
                        let mut guard = arrivals
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        for created_ms in created {
                            let lag = arrived_us.saturating_sub(created_ms.saturating_mul(1000));
                            guard
                                .samples
                                .push((created_ms, u64::try_from(lag).unwrap_or(0)));
                        }
                    }
                    Frame::Closed(reason) => closed = Some(format!("closed: {reason}")),
                    _ => {}
                }
            }
        }
        if closed.is_some() {
            break closed;
        }
    };
    arrivals
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .ended = ended;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_told_apart() {
        assert_eq!(
            parse_frame(
                r#"{"type":"delta","table":null,"data":[],"isLastChunk":true,"cursor":"0"}"#
            ),
            Frame::CatchUpDone
        );
        assert_eq!(
            parse_frame(
                r#"{"type":"change","cursor":"7","changes":[{"table":"journal_entries","op":"insert","rowId":"a","version":1,"data":{"createdAt":1764000000123}},{"table":"entry_insights","op":"update","rowId":"u","version":2,"data":{"updatedAt":1}}]}"#
            ),
            Frame::EntriesInserted(vec![1_764_000_000_123])
        );
        assert_eq!(
            parse_frame(r#"{"type":"closed","reason":"slow_client"}"#),
            Frame::Closed("slow_client".to_owned())
        );
        assert_eq!(
            parse_frame(r#"{"type":"heartbeat","timestamp":1}"#),
            Frame::Other
        );
    }
}
