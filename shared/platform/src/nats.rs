//! The NATS connection: reconnects forever in the background once established.

use std::time::Duration;

use async_nats::jetstream;

use crate::PlatformError;

/// Connect to NATS. The first connection must succeed (a wrong URL should fail loudly at
/// start); after that the client reconnects by itself whenever the server goes away.
pub async fn connect(url: &str, client_name: &str) -> Result<async_nats::Client, PlatformError> {
    async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .connect(url)
        .await
        .map_err(|source| PlatformError::NatsConnect {
            url: redact_url(url),
            source,
        })
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
    fn credentials_are_redacted() {
        assert_eq!(
            super::redact_url("nats://user:pw@host:4222"),
            "nats://<redacted>@host:4222"
        );
        assert_eq!(super::redact_url("nats://host:4222"), "nats://host:4222");
    }
}
