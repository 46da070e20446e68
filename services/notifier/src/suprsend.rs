//! SuprSend's HTTP API, as the notifier uses it:
//!
//! - `POST {base}/trigger/` — run a workflow: `{workflow, recipients: [{distinct_id, $email,
//!   name, ...}], data, $idempotency_key}`, `Authorization: Bearer <key>`; `202` accepted.
//!   SuprSend drops a repeated `$idempotency_key` (for 24 h), so a retry never sends twice.
//! - `POST {base}/v1/user/{distinct_id}/` — create or update a user profile (`$email`,
//!   `name`, `$timezone`); `201`.
//!
//! One call is one attempt: the answer is classified here, retries belong to the bus.

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

/// Response bodies are kept (logs, dead letters) up to this many bytes.
const BODY_LIMIT: usize = 2048;
/// A `Retry-After` longer than this is capped.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// One recipient of a workflow, identified inline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipient {
    pub distinct_id: String,
    #[serde(rename = "$email", skip_serializing_if = "Vec::is_empty")]
    pub email: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `data` of the daily-prompt workflow (`prompt.due`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailyPromptData {
    pub prompt_id: String,
    pub prompt_text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_name: Option<String>,
    /// `YYYY-MM-DD` in the schedule's zone.
    pub local_date: String,
    /// Epoch milliseconds.
    pub scheduled_at: i64,
    pub timezone: String,
}

/// `data` of the team-invitation workflow (`team.invitation_created`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TeamInvitationData {
    pub team_invitation_id: String,
    pub team_id: String,
    pub team_name: String,
    pub role: String,
    pub invited_by_name: String,
    /// Epoch milliseconds.
    pub expires_at: i64,
}

/// `data` of the export-ready workflow (`export.ready`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportReadyData {
    pub export_id: String,
    /// Presigned; valid until `expires_at`.
    pub download_url: String,
    /// Epoch milliseconds.
    pub expires_at: i64,
    pub size_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum WorkflowData {
    DailyPrompt(DailyPromptData),
    TeamInvitation(TeamInvitationData),
    ExportReady(ExportReadyData),
}

/// The body of `POST /trigger/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkflowTrigger {
    pub workflow: String,
    pub recipients: Vec<Recipient>,
    pub data: WorkflowData,
    #[serde(rename = "$idempotency_key")]
    pub idempotency_key: String,
}

/// The body of `POST /v1/user/{distinct_id}/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserProfile {
    #[serde(rename = "$email")]
    pub email: Vec<String>,
    pub name: String,
    #[serde(rename = "$timezone")]
    pub timezone: String,
}

/// What one call to SuprSend came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx.
    Accepted { status: u16 },
    /// 429 or 5xx: try again, not before `retry_after` when SuprSend said.
    Retryable {
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    /// Any other 4xx (or an unexpected status): retrying cannot help.
    Rejected { status: u16, body: String },
    /// No answer within the timeout.
    Timeout,
    /// Connection refused, reset, DNS...
    Network(String),
}

impl Answer {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Accepted { status }
            | Self::Retryable { status, .. }
            | Self::Rejected { status, .. } => Some(*status),
            Self::Timeout | Self::Network(_) => None,
        }
    }

    /// The stable label stored in `delivery_attempts.outcome`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Accepted { .. } => "accepted",
            Self::Retryable { .. } => "retryable",
            Self::Rejected { .. } => "rejected",
            Self::Timeout => "timeout",
            Self::Network(_) => "network_error",
        }
    }

    pub fn detail(&self) -> Option<String> {
        match self {
            Self::Accepted { .. } => None,
            Self::Retryable { body, .. } | Self::Rejected { body, .. } => Some(body.clone()),
            Self::Timeout => Some("no answer within the timeout".to_owned()),
            Self::Network(error) => Some(error.clone()),
        }
    }
}

/// An attempt's answer and how long it took.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub answer: Answer,
    pub latency: Duration,
}

/// The SuprSend client. The API key never appears in logs or Debug output.
#[derive(Clone)]
pub struct SuprSend {
    http: reqwest::Client,
    base_url: String,
    api_key: SecretString,
}

impl std::fmt::Debug for SuprSend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuprSend")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl SuprSend {
    pub fn new(base_url: &str, api_key: SecretString, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| error.to_string())?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
        })
    }

    pub async fn trigger(&self, trigger: &WorkflowTrigger) -> Attempt {
        self.post(format!("{}/trigger/", self.base_url), trigger)
            .await
    }

    pub async fn identify(&self, distinct_id: &str, profile: &UserProfile) -> Attempt {
        // The id goes in the path: escape what a path segment cannot hold.
        let segment: String = url_escape(distinct_id);
        self.post(format!("{}/v1/user/{segment}/", self.base_url), profile)
            .await
    }

    async fn post<B: Serialize>(&self, url: String, body: &B) -> Attempt {
        let started = Instant::now();
        let sent = self
            .http
            .post(url)
            .bearer_auth(self.api_key.expose_secret())
            .json(body)
            .send()
            .await;
        let answer = match sent {
            Ok(response) => classify(response).await,
            Err(error) if error.is_timeout() => Answer::Timeout,
            // The error's text can carry the URL, never the key (it is a header).
            Err(error) => Answer::Network(error.to_string()),
        };
        Attempt {
            answer,
            latency: started.elapsed(),
        }
    }
}

async fn classify(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_retry_after);
    let body = match response.text().await {
        Ok(text) => truncate(text),
        Err(error) if error.is_timeout() => return Answer::Timeout,
        Err(error) => format!("(body unreadable: {error})"),
    };
    match status {
        200..=299 => Answer::Accepted { status },
        429 | 500..=599 => Answer::Retryable {
            status,
            retry_after,
            body,
        },
        _ => Answer::Rejected { status, body },
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3), capped.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        (at.to_utc() - chrono::Utc::now())
            .to_std()
            .unwrap_or_default()
    };
    Some(delay.min(RETRY_AFTER_CAP))
}

fn truncate(mut text: String) -> String {
    if text.len() > BODY_LIMIT {
        let mut end = BODY_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Percent-encode everything but unreserved characters (RFC 3986 §2.3).
fn url_escape(segment: &str) -> String {
    let mut escaped = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_dates_and_is_capped() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("999999"), Some(RETRY_AFTER_CAP));
        let past = parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(past, Duration::ZERO);
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let delay = parse_retry_after(&soon).unwrap();
        assert!(delay > Duration::from_secs(25) && delay <= Duration::from_secs(30));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn the_trigger_body_has_suprsends_field_names() {
        let trigger = WorkflowTrigger {
            workflow: "daily-prompt".into(),
            recipients: vec![Recipient {
                distinct_id: "u1".into(),
                email: vec!["ada@example.com".into()],
                name: Some("Ada".into()),
            }],
            data: WorkflowData::ExportReady(ExportReadyData {
                export_id: "e1".into(),
                download_url: "https://s3/x".into(),
                expires_at: 1,
                size_bytes: 2,
            }),
            idempotency_key: "k".into(),
        };
        let json = serde_json::to_value(&trigger).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "workflow": "daily-prompt",
                "recipients": [{"distinct_id": "u1", "$email": ["ada@example.com"], "name": "Ada"}],
                "data": {"export_id": "e1", "download_url": "https://s3/x", "expires_at": 1, "size_bytes": 2},
                "$idempotency_key": "k"
            })
        );
        assert_eq!(url_escape("a@b.c/d"), "a%40b.c%2Fd");
    }
}
