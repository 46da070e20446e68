//! A NATS connection watched, and how consumers get back on it quickly (first measured on the
//! sync-streamer, whose live frames stop while its consumers are down).
//!
//! After a NATS restart three things decided how long live sync stayed silent:
//! - the client's reconnect delay: async-nats waits up to 4 s between attempts once an outage
//!   lasted a few seconds, so the connection itself came back up to 4 s after the server did;
//! - the consumers' retry back-off, which grew to 5 s (tail) or was a fixed 1 s (revocation,
//!   materializer);
//! - the ordered consumers' idle heartbeat (15 s in async-nats): a consumer the restarted
//!   server no longer has is noticed only after it, unless its connection is watched.
//!
//! So the client's reconnect delay is capped (`platform::nats::connect`, for every service),
//! every consumer watches its connection ([`ConnectionWatch`]) and retries with [`Backoff`]
//! (capped at [`Backoff::CAP`]).

use std::time::Duration;

/// Retry delays for a consumer that failed: short and bounded, since each retry is one cheap
/// JetStream request and the bound is what decides how soon live frames flow again.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(50);
    pub const CAP: Duration = Duration::from_millis(250);

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        delay
    }

    /// After a success (a consumer that ran): the next failure retries at once.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Tells a consumer that the NATS connection it was created on is gone.
///
/// An ordered consumer is an in-memory ephemeral consumer on the server: a restarted server
/// has lost it, and async-nats finds out only after a missed idle heartbeat (15 s) and five
/// `consumer info` attempts with back-off. Meanwhile nothing is delivered. A consumer that
/// watches its connection instead restarts from its own position as soon as the connection
/// is back.
pub struct ConnectionWatch {
    client: async_nats::Client,
    /// (server id, client id) of the connection when the watch started: a reconnection, even
    /// one between two polls, changes the client id; a restarted server, the server id.
    identity: (String, u64),
}

impl ConnectionWatch {
    const POLL: Duration = Duration::from_millis(50);

    /// Watch the client's current connection. Start it before creating the consumer: a
    /// reconnection in between then restarts the consumer once more, never too few times.
    pub fn new(client: async_nats::Client) -> Self {
        let identity = Self::identity(&client);
        Self { client, identity }
    }

    fn identity(client: &async_nats::Client) -> (String, u64) {
        let info = client.server_info();
        (info.server_id, info.client_id)
    }

    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Resolves once the watched connection is down or replaced.
    pub async fn lost(&self) {
        loop {
            if !self.connected() || Self::identity(&self.client) != self.identity {
                return;
            }
            tokio::time::sleep(Self::POLL).await;
        }
    }

    /// Resolves once the client is connected (again).
    pub async fn back(&self) {
        while !self.connected() {
            tokio::time::sleep(Self::POLL).await;
        }
    }
}

/// Create an ordered consumer on `stream` and start reading it (the two requests every
/// ordered consumer makes), with the error as text for the caller's retry log.
pub async fn ordered_messages(
    stream: &async_nats::jetstream::stream::Stream,
    config: async_nats::jetstream::consumer::pull::OrderedConfig,
) -> Result<async_nats::jetstream::consumer::pull::Ordered, String> {
    stream
        .create_consumer(config)
        .await
        .map_err(|error| error.to_string())?
        .messages()
        .await
        .map_err(|error| error.to_string())
}

/// Wait for `delay`, then for the client to be connected; `false` if `shutdown` came first.
/// (A JetStream request made while disconnected waits out its whole timeout.)
pub async fn pause_until_connected(
    client: &async_nats::Client,
    delay: Duration,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    let watch = ConnectionWatch::new(client.clone());
    tokio::select! {
        () = async {
            tokio::time::sleep(delay).await;
            watch.back().await;
        } => true,
        () = shutdown.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay()).collect();
        assert_eq!(
            delays,
            [50, 100, 200, 250, 250].map(Duration::from_millis).to_vec()
        );
        backoff.reset();
        assert_eq!(backoff.next_delay(), Backoff::FIRST);
    }
}
