//! The three streams and the handle services use to reach them.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use messages::definition::BusMessage;
pub use platform::config::{StreamSettings, StreamStorage};

use crate::BusError;
use crate::headers;

/// The bus as one service sees it: JetStream, the namespace, and the service's name (which
/// names its durable consumers).
#[derive(Clone)]
pub struct Bus {
    jetstream: jetstream::Context,
    namespace: String,
    service: &'static str,
    settings: StreamSettings,
}

/// The three streams: (base name, subject root, retention, max age).
const STREAMS: [(&str, &str, stream::RetentionPolicy, Duration); 3] = [
    (
        "EVENTS",
        "events",
        stream::RetentionPolicy::Limits,
        Duration::from_secs(7 * 24 * 3600),
    ),
    (
        "TASKS",
        "tasks",
        stream::RetentionPolicy::WorkQueue,
        Duration::from_secs(14 * 24 * 3600),
    ),
    (
        "CHANGES",
        "changes",
        stream::RetentionPolicy::Limits,
        Duration::from_secs(30 * 24 * 3600),
    ),
];

/// Longer than the relay's longest retry delay, so a re-published outbox row is dropped.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The base names of the three streams.
pub const STREAM_NAMES: [&str; 3] = ["EVENTS", "TASKS", "CHANGES"];

impl Bus {
    /// [`Bus::start_with`] with the development settings (one replica, file storage).
    pub async fn start(
        jetstream: jetstream::Context,
        namespace: &str,
        service: &'static str,
    ) -> Result<Self, BusError> {
        Self::start_with(jetstream, namespace, service, StreamSettings::default()).await
    }

    /// Connect the bus and make sure the streams exist, creating missing ones with
    /// `settings` (`NATS_STREAM_REPLICAS`, `NATS_STREAM_STORAGE`). Idempotent: existing
    /// streams are left as they are (a difference from `settings` is logged), so a stream is
    /// never re-created or resized behind the operator's back.
    pub async fn start_with(
        jetstream: jetstream::Context,
        namespace: &str,
        service: &'static str,
        settings: StreamSettings,
    ) -> Result<Self, BusError> {
        let bus = Self {
            jetstream,
            namespace: namespace.to_owned(),
            service,
            settings,
        };
        bus.provision_streams().await?;
        Ok(bus)
    }

    /// The settings missing streams are created with.
    pub fn stream_settings(&self) -> StreamSettings {
        self.settings
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The full subject for a subject relative to the namespace.
    pub fn subject(&self, relative: &str) -> String {
        if self.namespace.is_empty() {
            relative.to_owned()
        } else {
            format!("{}.{relative}", self.namespace)
        }
    }

    /// The subject relative to the namespace, for a full subject.
    pub fn relative_subject<'a>(&self, full: &'a str) -> &'a str {
        if self.namespace.is_empty() {
            full
        } else {
            full.strip_prefix(&self.namespace)
                .and_then(|rest| rest.strip_prefix('.'))
                .unwrap_or(full)
        }
    }

    /// A stream's name: `EVENTS`, or `<NAMESPACE>_EVENTS`.
    pub fn stream_name(&self, base: &str) -> String {
        if self.namespace.is_empty() {
            base.to_owned()
        } else {
            format!(
                "{}_{base}",
                self.namespace.to_ascii_uppercase().replace(['.', '-'], "_")
            )
        }
    }

    /// The stream, created if missing. Services starting at once on a new namespace race to
    /// create it: the loser's create fails (subjects overlap, or the name is taken) because
    /// the winner's stream now exists, so it looks again rather than failing its start.
    async fn get_or_create_stream(
        &self,
        config: stream::Config,
    ) -> Result<stream::Stream, BusError> {
        const ATTEMPTS: u32 = 5;
        let mut attempt = 1;
        loop {
            match self.jetstream.get_or_create_stream(config.clone()).await {
                Ok(stream) => return Ok(stream),
                Err(error) if attempt < ATTEMPTS && lost_creation_race(&error) => {
                    tracing::debug!(stream = %config.name, %error, "another service created the stream first; looking again");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(error) => return Err(BusError::jetstream("creating stream", error)),
            }
        }
    }

    async fn provision_streams(&self) -> Result<(), BusError> {
        let storage = match self.settings.storage {
            StreamStorage::File => stream::StorageType::File,
            StreamStorage::Memory => stream::StorageType::Memory,
        };
        for (base, root, retention, max_age) in STREAMS {
            let config = stream::Config {
                name: self.stream_name(base),
                subjects: vec![self.subject(&format!("{root}.>"))],
                retention,
                max_age,
                duplicate_window: DUPLICATE_WINDOW,
                storage,
                num_replicas: self.settings.replicas,
                ..Default::default()
            };
            let stream = self.get_or_create_stream(config).await?;
            let existing = &stream.cached_info().config;
            if existing.num_replicas != self.settings.replicas || existing.storage != storage {
                tracing::warn!(
                    stream = %existing.name,
                    replicas = existing.num_replicas,
                    storage = ?existing.storage,
                    configured_replicas = self.settings.replicas,
                    configured_storage = ?storage,
                    "the stream exists with other settings than NATS_STREAM_REPLICAS / \
                     NATS_STREAM_STORAGE; it is left as it is (see deploy/nats/streams.md)"
                );
            }
        }
        Ok(())
    }

    /// Publish straight to JetStream (not transactional — use the outbox for messages that
    /// must commit with a state change) and wait for the ack. `message_id` de-duplicates.
    pub async fn publish<M: BusMessage>(
        &self,
        message: &M,
        message_id: &str,
    ) -> Result<u64, BusError> {
        self.publish_raw(
            &M::subject(),
            M::NAME,
            message.encode_to_vec().into(),
            message_id,
            &[],
        )
        .await
    }

    /// Publish bytes to a subject relative to the namespace; returns the stream sequence.
    pub async fn publish_raw(
        &self,
        relative_subject: &str,
        name: &str,
        payload: bytes::Bytes,
        message_id: &str,
        extra_headers: &[(String, String)],
    ) -> Result<u64, BusError> {
        let mut header_map = async_nats::HeaderMap::new();
        header_map.insert(headers::MESSAGE_ID, message_id);
        header_map.insert(headers::MESSAGE_NAME, name);
        header_map.insert(
            headers::EMITTED_AT_MICROS,
            headers::now_micros().to_string().as_str(),
        );
        for (key, value) in extra_headers {
            header_map.insert(key.as_str(), value.as_str());
        }
        for (key, value) in platform::telemetry::current_trace_headers() {
            header_map.insert(key.as_str(), value.as_str());
        }
        let ack = self
            .jetstream
            .publish_with_headers(self.subject(relative_subject), header_map, payload)
            .await
            .map_err(|error| BusError::jetstream("publishing", error))?
            .await
            .map_err(|error| BusError::jetstream("awaiting publish ack", error))?;
        Ok(ack.sequence)
    }

    /// Delete this namespace's streams (tests clean up after themselves).
    pub async fn delete_streams(&self) -> Result<(), BusError> {
        for (base, ..) in STREAMS {
            let _ = self.jetstream.delete_stream(self.stream_name(base)).await;
        }
        Ok(())
    }
}

/// A stream create that failed because a concurrent create of the same stream won.
fn lost_creation_race(error: &async_nats::jetstream::context::CreateStreamError) -> bool {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::CreateStreamErrorKind;
    match error.kind() {
        CreateStreamErrorKind::JetStream(error) => matches!(
            error.error_code(),
            ErrorCode::STREAM_SUBJECT_OVERLAP | ErrorCode::STREAM_NAME_EXIST
        ),
        _ => false,
    }
}
