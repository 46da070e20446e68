//! Header names the bus sets on every message.

/// JetStream's de-duplication id: the outbox id.
pub const MESSAGE_ID: &str = "Nats-Msg-Id";
/// When the message was written to the outbox (epoch microseconds), for end-to-end latency.
pub const EMITTED_AT_MICROS: &str = "Bus-Emitted-At-Us";
/// The message's bus name (`journal_entry.created`).
pub const MESSAGE_NAME: &str = "Bus-Message";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Epoch microseconds now.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
