//! The NATS connection: reconnects forever in the background once established.

use std::time::Duration;

use async_nats::jetstream;
use secrecy::ExposeSecret;

use crate::PlatformError;
use crate::config::NatsAuth;

/// The longest pause between two reconnection attempts. The client's default grows to 4 s,
/// so after an outage it came back up to 4 s after NATS did; every consumer re-attaches only
/// once the client is connected again (issue 17: live within 2 s). A refused connection
/// costs the server nothing, so trying four times a second is cheap.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(250);

/// The pause before reconnection attempt `attempts` (1 = the first after the connection
/// was lost): at once, then doubling from 50 ms up to [`MAX_RECONNECT_DELAY`].
pub fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(10);
    (Duration::from_millis(50) * 2u32.pow(doublings)).min(MAX_RECONNECT_DELAY)
}

/// Connect to NATS without credentials (development, tests). See [`connect_with`].
pub async fn connect(url: &str, client_name: &str) -> Result<async_nats::Client, PlatformError> {
    connect_with(url, client_name, None).await
}

/// Connect to NATS, as `auth`'s user when given. The first connection must succeed (a wrong
/// URL or password should fail loudly at start); after that the client reconnects by itself
/// whenever the server goes away. A message the server refuses for lack of permission is
/// logged (the subject, never the credentials): JetStream would otherwise only time out.
pub async fn connect_with(
    url: &str,
    client_name: &str,
    auth: Option<&NatsAuth>,
) -> Result<async_nats::Client, PlatformError> {
    let mut options = async_nats::ConnectOptions::new();
    if let Some(auth) = auth {
        options = options
            .user_and_password(auth.user.clone(), auth.password.expose_secret().to_owned())
            // Replies come to an inbox only this user may subscribe to (the shared `_INBOX.>`
            // would let any service read another's replies).
            .custom_inbox_prefix(inbox_prefix(&auth.user));
    }
    options
        .name(client_name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(|event| async move {
            if let async_nats::Event::ServerError(error) = event {
                tracing::warn!(%error, "nats server error");
            }
        })
        .connect(url)
        .await
        .map_err(|source| {
            let refused = matches!(
                source.kind(),
                async_nats::ConnectErrorKind::AuthorizationViolation
                    | async_nats::ConnectErrorKind::Authentication
            );
            match (refused, auth) {
                (true, Some(auth)) => PlatformError::NatsAuth {
                    url: redact_url(url),
                    user: Some(auth.user.clone()),
                },
                (true, None) => PlatformError::NatsAuth {
                    url: redact_url(url),
                    user: None,
                },
                (false, _) => PlatformError::NatsConnect {
                    url: redact_url(url),
                    source,
                },
            }
        })
}

/// The inbox prefix of a service connecting as `user`: `_INBOX_<user>`. The NATS users'
/// permissions (`bus::permissions`) allow each user its own inboxes only.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

/// The part of a JetStream API reply the probe reads. (The full account-info type of
/// async-nats expects fields NATS 2.9 does not send, so the probe decodes only this.)
#[derive(Debug, serde::Deserialize)]
struct JetStreamApiReply {
    #[serde(rename = "type")]
    reply_type: Option<String>,
    error: Option<JetStreamApiError>,
}

#[derive(Debug, serde::Deserialize)]
struct JetStreamApiError {
    code: u16,
    description: Option<String>,
}

/// A round trip through the JetStream API (`$JS.API.INFO`): proves the connection is up *and*
/// JetStream answers. The readiness probe for NATS.
pub async fn ping(jetstream: &jetstream::Context, timeout: Duration) -> Result<(), String> {
    let client = jetstream.client();
    // While reconnecting, a request would only wait out the timeout: answer at once.
    if client.connection_state() != async_nats::connection::State::Connected {
        return Err(format!("disconnected ({})", client.connection_state()));
    }
    let request = client.request("$JS.API.INFO", bytes::Bytes::new());
    let message = match tokio::time::timeout(timeout, request).await {
        Ok(Ok(message)) => message,
        Ok(Err(error)) => return Err(error.to_string()),
        Err(_) => return Err(format!("no answer within {} ms", timeout.as_millis())),
    };
    let reply: JetStreamApiReply = serde_json::from_slice(&message.payload)
        .map_err(|error| format!("unreadable JetStream reply: {error}"))?;
    match (reply.error, reply.reply_type) {
        (Some(error), _) => Err(format!(
            "JetStream error {}: {}",
            error.code,
            error.description.unwrap_or_default()
        )),
        (None, Some(_)) => Ok(()),
        (None, None) => Err("JetStream reply without a type".to_owned()),
    }
}

/// Keep a 0/1 gauge `name{service}` of whether `client` is connected, refreshed every second
/// until `shutdown`: for a service whose readiness only reports NATS, what alerts on it.
pub fn spawn_connected_gauge(
    client: async_nats::Client,
    name: &'static str,
    service: &'static str,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    // Installed now, or the first value would go to no recorder (the HTTP router installs it
    // later, when the service starts serving).
    let _ = crate::metrics::handle();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let connected =
                        client.connection_state() == async_nats::connection::State::Connected;
                    metrics::gauge!(name, "service" => service).set(if connected { 1.0 } else { 0.0 });
                }
                () = shutdown.cancelled() => break,
            }
        }
    })
}

/// Drop credentials from a URL before it is logged.
fn redact_url(url: &str) -> String {
    match url.split_once('@') {
        Some((scheme_and_user, host)) => {
            let scheme = scheme_and_user.split("://").next().unwrap_or("nats");
            format!("{scheme}://<redacted>@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reconnect_attempts_are_at_most_a_quarter_second_apart() {
        assert_eq!(super::reconnect_delay(1), super::Duration::ZERO);
        assert_eq!(super::reconnect_delay(2), super::Duration::from_millis(50));
        assert_eq!(super::reconnect_delay(3), super::Duration::from_millis(100));
        assert_eq!(super::reconnect_delay(5), super::MAX_RECONNECT_DELAY);
        assert_eq!(
            super::reconnect_delay(usize::MAX),
            super::MAX_RECONNECT_DELAY
        );
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            super::redact_url("nats://user:pw@host:4222"),
            "nats://<redacted>@host:4222"
        );
        assert_eq!(super::redact_url("nats://host:4222"), "nats://host:4222");
    }
}
