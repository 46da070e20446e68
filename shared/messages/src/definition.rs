//! What a bus message is: a prost message with a name, a destination and delivery settings —
//! the Rust form of pg-tbus's `defineEvent` / `defineTask`.

use std::time::Duration;

/// Delivery settings (pg-tbus `retryLimit`, `retryDelay`, `retryBackoff`, `expireIn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Retries after the first attempt; the handler runs at most `retry_limit + 1` times
    /// before the message is dead-lettered.
    pub retry_limit: u32,
    /// Delay before the first retry.
    pub retry_delay: Duration,
    /// Double the delay on every retry (with jitter) instead of keeping it constant.
    pub retry_backoff: bool,
    /// How long one attempt may run before JetStream redelivers it (the consumer's ack wait;
    /// long handlers send progress acks to keep it).
    pub expire_in: Duration,
}

impl DeliveryConfig {
    /// Defaults for events: 3 retries from 5 s with backoff, 60 s per attempt.
    pub const EVENT_DEFAULT: Self = Self {
        retry_limit: 3,
        retry_delay: Duration::from_secs(5),
        retry_backoff: true,
        expire_in: Duration::from_secs(60),
    };
    /// Defaults for tasks: 3 retries from 10 s with backoff, 300 s per attempt (ARCHITECTURE §4).
    pub const TASK_DEFAULT: Self = Self {
        retry_limit: 3,
        retry_delay: Duration::from_secs(10),
        retry_backoff: true,
        expire_in: Duration::from_secs(300),
    };
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// `events.<name>` on the EVENTS stream: every subscribing service gets a copy.
    Event,
    /// `tasks.<queue>.<name>` on the TASKS stream: one handler, replicas share the work.
    Task { queue: &'static str },
}

/// A message that travels on the bus. Implement it with [`define_event!`](crate::define_event)
/// or [`define_task!`](crate::define_task), which also implement [`Event`] or [`Task`].
pub trait BusMessage: prost::Message + Default + Send + Sync + 'static {
    /// e.g. `journal_entry.created`; part of the subject, so lowercase, dots and underscores.
    const NAME: &'static str;
    const DESTINATION: Destination;
    const CONFIG: DeliveryConfig;

    /// The subject relative to the bus namespace.
    fn subject() -> String {
        match Self::DESTINATION {
            Destination::Event => format!("events.{}", Self::NAME),
            Destination::Task { queue } => format!("tasks.{queue}.{}", Self::NAME),
        }
    }
}

/// A fact that happened; fanned out to every service that handles it.
pub trait Event: BusMessage {}

/// A unit of work for one handler; replicas compete for it.
pub trait Task: BusMessage {}

/// `define_event!(JournalEntryCreated, "journal_entry.created")`, optionally with a
/// [`DeliveryConfig`] for the handlers' retries.
#[macro_export]
macro_rules! define_event {
    ($message:ty, $name:literal) => {
        $crate::define_event!(
            $message,
            $name,
            $crate::definition::DeliveryConfig::EVENT_DEFAULT
        );
    };
    ($message:ty, $name:literal, $config:expr) => {
        impl $crate::definition::BusMessage for $message {
            const NAME: &'static str = $name;
            const DESTINATION: $crate::definition::Destination =
                $crate::definition::Destination::Event;
            const CONFIG: $crate::definition::DeliveryConfig = $config;
        }
        impl $crate::definition::Event for $message {}
    };
}

/// `define_task!(VerifyAttachment, queue = "media", "verify_attachment", config)`.
#[macro_export]
macro_rules! define_task {
    ($message:ty, queue = $queue:literal, $name:literal) => {
        $crate::define_task!(
            $message,
            queue = $queue,
            $name,
            $crate::definition::DeliveryConfig::TASK_DEFAULT
        );
    };
    ($message:ty, queue = $queue:literal, $name:literal, $config:expr) => {
        impl $crate::definition::BusMessage for $message {
            const NAME: &'static str = $name;
            const DESTINATION: $crate::definition::Destination =
                $crate::definition::Destination::Task { queue: $queue };
            const CONFIG: $crate::definition::DeliveryConfig = $config;
        }
        impl $crate::definition::Task for $message {}
    };
}

/// A synchronous question one service asks another over NATS request/reply (subject
/// `queries.<name>`), answered by exactly one replica of the service that owns the data.
/// Implement it with [`define_query!`](crate::define_query).
pub trait Query: prost::Message + Default + Send + Sync + 'static {
    /// `<owning service>.<question>`, e.g. `api.export_data`.
    const NAME: &'static str;
    /// What the answer is.
    type Reply: prost::Message + Default + Send + Sync + 'static;

    /// The subject relative to the namespace.
    fn subject() -> String {
        format!("queries.{}", Self::NAME)
    }
}

/// `define_query!(ExportDataRequest, "api.export_data", reply = ExportDataReply)`.
#[macro_export]
macro_rules! define_query {
    ($message:ty, $name:literal, reply = $reply:ty) => {
        impl $crate::definition::Query for $message {
            const NAME: &'static str = $name;
            type Reply = $reply;
        }
    };
}
