//! What the scenarios that drive the api over HTTP share: the load client, one checked
//! request, the dev login, sync tokens and the user they name, and the figures they print.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::report::Measurement;

/// An HTTP/1.1 client for load: keep-alive connections that never idle out (one per task),
/// no Nagle delay, a 30 s bound per request.
pub(crate) fn load_client(max_idle_per_host: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(max_idle_per_host)
        .pool_idle_timeout(None)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")
}

/// The request of a create and what its answer must look like.
pub(crate) struct CreateCall<'a> {
    pub(crate) url: &'a str,
    /// The credential header: (`authorization`, `Bearer …`) or (`x-api-key`, key).
    pub(crate) credential: (&'static str, &'a str),
    pub(crate) body: &'a str,
    pub(crate) status: StatusCode,
    /// How the created entry's body starts (`{"json":{"journalEntryId":"` for RPC).
    pub(crate) answer_prefix: &'static [u8],
}

impl<'a> CreateCall<'a> {
    /// `journalEntries.create` with `authorization` (`Bearer …`): a `200` with the entry.
    pub(crate) fn rpc(url: &'a str, authorization: &'a str, body: &'a str) -> Self {
        Self {
            url,
            credential: ("authorization", authorization),
            body,
            status: StatusCode::OK,
            answer_prefix: RPC_ENTRY_PREFIX,
        }
    }

    /// POST it; an answer other than the expected status and body fails the operation.
    pub(crate) async fn send(&self, client: &reqwest::Client) -> anyhow::Result<()> {
        let (header, value) = self.credential;
        let response = client
            .post(self.url)
            .header(header, value)
            .header("content-type", "application/json")
            .body(self.body.to_owned())
            .send()
            .await
            .context("sending")?;
        let status = response.status();
        let bytes = response.bytes().await.context("reading the response")?;
        anyhow::ensure!(
            status == self.status && bytes.starts_with(self.answer_prefix),
            "{status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        Ok(())
    }
}

/// The beginning of a created entry in an RPC answer.
const RPC_ENTRY_PREFIX: &[u8] = br#"{"json":{"journalEntryId":""#;

/// A user signed in through the dev login.
pub(crate) struct SignedIn {
    pub(crate) user_id: Uuid,
    /// The session token (bearer).
    pub(crate) token: String,
}

/// Sign in (creating the user on first use) through `POST /auth/dev/login`.
pub(crate) async fn dev_login(
    client: &reqwest::Client,
    api: &str,
    email: &str,
    name: &str,
) -> anyhow::Result<SignedIn> {
    let login: serde_json::Value = client
        .post(format!("{api}/auth/dev/login"))
        .json(&serde_json::json!({ "email": email, "name": name }))
        .send()
        .await
        .context("dev login")?
        .error_for_status()
        .context("dev login")?
        .json()
        .await
        .context("dev login answer")?;
    let token = login["token"]
        .as_str()
        .context("dev login: no token")?
        .to_owned();
    let user_id = login["user"]["userId"]
        .as_str()
        .or_else(|| login["userId"].as_str())
        .and_then(|id| Uuid::parse_str(id).ok());
    let user_id = match user_id {
        Some(id) => id,
        // The login's answer did not carry it in a known field: the sync token names it.
        None => token_user_id(&sync_token(client, api, &token).await?)?,
    };
    Ok(SignedIn { user_id, token })
}

/// A sync token for `session` (`sync.token`).
pub(crate) async fn sync_token(
    client: &reqwest::Client,
    api: &str,
    session: &str,
) -> anyhow::Result<String> {
    let answer: serde_json::Value = client
        .post(format!("{api}/rpc/sync/token"))
        .bearer_auth(session)
        .json(&serde_json::json!({}))
        .send()
        .await
        .context("sync token")?
        .error_for_status()
        .context("sync token")?
        .json()
        .await
        .context("sync token answer")?;
    answer["json"]["token"]
        .as_str()
        .map(str::to_owned)
        .context("no sync token in the answer")
}

/// The user a sync token names, read from its claims (not verified: the bench only needs to
/// know whom it signed in).
pub(crate) fn token_user_id(sync_token: &str) -> anyhow::Result<Uuid> {
    let payload = sync_token.split('.').next().unwrap_or_default();
    let claims: serde_json::Value = serde_json::from_slice(&base64url(payload)?)?;
    let id = claims["userId"]
        .as_str()
        .context("no userId in the sync token")?;
    Uuid::parse_str(id).context("the sync token's userId is not a uuid")
}

/// URL-safe base64 without padding (the sync token's claims).
fn base64url(text: &str) -> anyhow::Result<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0_u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes() {
        let value = ALPHABET
            .iter()
            .position(|c| *c == byte)
            .context("not base64url")? as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Ok(out)
}

pub(crate) fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part / whole * 100.0
    } else {
        0.0
    }
}

/// A variant whose every operation failed measured nothing: fail the scenario with the cause.
pub(crate) fn ensure_some_succeeded(measurement: &Measurement) -> anyhow::Result<()> {
    anyhow::ensure!(
        measurement.ops > 0,
        "{} / {}: every operation failed ({} errors), first: {}",
        measurement.scenario,
        measurement.variant,
        measurement.errors,
        measurement.first_error.as_deref().unwrap_or("-")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_decodes_unpadded_claims() -> anyhow::Result<()> {
        assert_eq!(base64url("eyJ1c2VySWQiOiJ4In0")?, br#"{"userId":"x"}"#);
        Ok(())
    }
}
