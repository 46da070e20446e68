//! The `notifier` service: delivers notifications through SuprSend's HTTP API — the daily
//! prompt (`prompt.due`), team invitations (`team.invitation_created`), finished exports
//! (`export.ready`) — and identifies users to SuprSend (`user.created`,
//! `user.profile_updated`). Idempotent per triggering message, retried with backoff
//! (honouring `Retry-After`), dead-lettered on a client error, every attempt logged in the
//! `notifier` schema. See docs/notifier.md.

pub mod delivery;
pub mod handlers;
pub mod suprsend;

use std::time::Duration;

use axum::Router;
use bus::BusRouter;
use bus::service::ServiceBuilder;
use messages::journal::v1::{
    ExportReady, PromptDue, RetentionPurgeDue, TeamInvitationCreated, UserCreated, UserDeleted,
    UserProfileUpdated,
};
use platform::config::{CommonConfig, EnvReader, FromEnvironment};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::suprsend::SuprSend;

bus::service_identity! {
    service: "notifier",
    schema: "notifier",
    default_port: 8084,
    migrations: "../../migrations/notifier",
}

/// SuprSend workflow slugs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflows {
    /// `SUPRSEND_WORKFLOW_DAILY_PROMPT` (default `daily-prompt`).
    pub daily_prompt: String,
    /// `SUPRSEND_WORKFLOW_TEAM_INVITATION` (default `team-invitation`).
    pub team_invitation: String,
    /// `SUPRSEND_WORKFLOW_EXPORT_READY` (default `export-ready`).
    pub export_ready: String,
}

impl Default for Workflows {
    fn default() -> Self {
        Self {
            daily_prompt: "daily-prompt".to_owned(),
            team_invitation: "team-invitation".to_owned(),
            export_ready: "export-ready".to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `PORT`.
    pub port: u16,
    /// `SUPRSEND_BASE_URL` (default `https://hub.suprsend.com`).
    pub suprsend_base_url: String,
    /// `SUPRSEND_API_KEY`: unset, notifications are recorded (`skipped`) but not sent —
    /// for development without a SuprSend workspace; required with `ENVIRONMENT=production`.
    pub suprsend_api_key: Option<SecretString>,
    /// `SUPRSEND_TIMEOUT_SECONDS` (default 10): one call's limit; a timeout is retried.
    pub suprsend_timeout: Duration,
    pub workflows: Workflows,
    /// `NOTIFIER_HISTORY_RETENTION_DAYS` (default 90): notifications and attempts kept.
    pub history_retention: Duration,
}

impl FromEnvironment for Config {
    const DEFAULT_PORT: u16 = DEFAULT_PORT;

    fn read_own(common: CommonConfig, port: u16, env: &mut EnvReader) -> Self {
        let suprsend_base_url: String =
            env.with_default("SUPRSEND_BASE_URL", "https://hub.suprsend.com".to_owned());
        let valid_base = url_is_http(&suprsend_base_url);
        if !valid_base {
            env.reject(
                "SUPRSEND_BASE_URL",
                format!("`{suprsend_base_url}` is not an absolute http(s) URL"),
            );
        }
        let suprsend_api_key = env
            .optional::<String>("SUPRSEND_API_KEY")
            .filter(|key| !key.trim().is_empty())
            .map(|key| SecretString::from(key.trim().to_owned()));
        // Without a key every notification is only recorded as `skipped`: fine on a laptop,
        // silent loss in production.
        let environment = platform::config::read_environment(env);
        if environment == platform::config::Environment::Production && suprsend_api_key.is_none() {
            env.reject(
                "SUPRSEND_API_KEY",
                "is required with ENVIRONMENT=production (without it nothing is sent)",
            );
        }
        let suprsend_timeout =
            env.seconds_with_default("SUPRSEND_TIMEOUT_SECONDS", Duration::from_secs(10));
        if suprsend_timeout.is_zero() {
            env.reject("SUPRSEND_TIMEOUT_SECONDS", "must be at least 1");
        }
        let defaults = Workflows::default();
        // An empty or blank value counts as unset (the default slug).
        let mut workflow =
            |name: &str, default: String| -> String { env.with_default::<String>(name, default) };
        let workflows = Workflows {
            daily_prompt: workflow("SUPRSEND_WORKFLOW_DAILY_PROMPT", defaults.daily_prompt),
            team_invitation: workflow(
                "SUPRSEND_WORKFLOW_TEAM_INVITATION",
                defaults.team_invitation,
            ),
            export_ready: workflow("SUPRSEND_WORKFLOW_EXPORT_READY", defaults.export_ready),
        };
        let history_days: u64 = env.with_default("NOTIFIER_HISTORY_RETENTION_DAYS", 90);
        Self {
            common,
            port,
            suprsend_base_url,
            suprsend_api_key,
            suprsend_timeout,
            workflows,
            history_retention: Duration::from_secs(history_days.saturating_mul(86_400)),
        }
    }
}

impl Config {
    /// Defaults for tests: the given database and NATS server; no SuprSend key (nothing is
    /// sent) until a test points `suprsend_base_url` and `suprsend_api_key` at a stand-in.
    pub fn for_tests(database_url: &str, nats_url: &str) -> Self {
        Self {
            common: CommonConfig::for_tests(database_url, nats_url),
            port: 0,
            suprsend_base_url: "http://127.0.0.1:9".to_owned(),
            suprsend_api_key: None,
            suprsend_timeout: Duration::from_secs(2),
            workflows: Workflows::default(),
            history_retention: Duration::from_secs(90 * 86_400),
        }
    }
}

fn url_is_http(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.starts_with('/')
}

platform::impl_service_config!(Config);

bus::service_error! {
    /// Everything that can stop the service, each with a stable code for logs and alerts.
    pub enum Error {
        #[error("http client: {0}")]
        HttpClient(String) => "HTTP_CLIENT",
    }
}

/// What the notifier's handlers reach.
#[derive(Clone)]
pub struct NotifierState {
    pub db: sqlx::PgPool,
    /// `None` when `SUPRSEND_API_KEY` is unset.
    pub suprsend: Option<SuprSend>,
    pub workflows: Workflows,
    /// Retries of the notification events (their last attempt marks a notification
    /// `failed`).
    pub retry_limit: u32,
    pub history_retention: Duration,
}

impl NotifierState {
    pub fn new(db: sqlx::PgPool, config: &Config) -> Result<Self, Error> {
        let suprsend = match &config.suprsend_api_key {
            Some(key) => Some(
                SuprSend::new(
                    &config.suprsend_base_url,
                    key.clone(),
                    config.suprsend_timeout,
                )
                .map_err(Error::HttpClient)?,
            ),
            None => {
                tracing::warn!("SUPRSEND_API_KEY is not set: notifications are recorded, not sent");
                None
            }
        };
        Ok(Self {
            db,
            suprsend,
            workflows: config.workflows.clone(),
            retry_limit: messages::NOTIFICATION_DELIVERY.retry_limit,
            history_retention: config.history_retention,
        })
    }
}

/// Run the service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mut service = ServiceBuilder::new(SERVICE, SCHEMA, &config.common, &MIGRATOR, shutdown)
        .start::<Error>()
        .await?;
    let state = NotifierState::new(service.db().clone(), &config)?;
    let consumers = service.consume(
        BusRouter::new(service.bus().clone(), service.db().clone(), state)
            .on::<PromptDue, _, _>(handlers::prompt_due)
            .on::<TeamInvitationCreated, _, _>(handlers::team_invitation_created)
            .on::<ExportReady, _, _>(handlers::export_ready)
            .on::<UserCreated, _, _>(handlers::user_created)
            .on::<UserProfileUpdated, _, _>(handlers::user_profile_updated)
            .on::<UserDeleted, _, _>(handlers::user_deleted)
            .on::<RetentionPurgeDue, _, _>(handlers::purge_retention),
    );
    let readiness = service.infra().readiness().with_check(consumers);
    service.serve(listener, Router::new(), readiness).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bad_variables_are_named_and_the_key_is_optional() {
        let error = Config::read(EnvReader::from_map([
            ("SUPRSEND_BASE_URL", "hub.suprsend.com"),
            ("SUPRSEND_TIMEOUT_SECONDS", "0"),
        ]))
        .unwrap_err();
        assert!(error.names("SUPRSEND_BASE_URL"));
        assert!(error.names("SUPRSEND_TIMEOUT_SECONDS"));
        let config = Config::read(EnvReader::from_map([
            ("SUPRSEND_API_KEY", "secret-key"),
            ("SUPRSEND_WORKFLOW_DAILY_PROMPT", " "),
        ]))
        .unwrap();
        assert!(config.suprsend_api_key.is_some());
        assert!(!format!("{config:?}").contains("secret-key"));
        assert_eq!(config.workflows, Workflows::default());
    }

    #[test]
    fn production_requires_the_suprsend_key() {
        let error = Config::read(EnvReader::from_map([("ENVIRONMENT", "production")])).unwrap_err();
        assert!(error.names("SUPRSEND_API_KEY"), "{error}");
        let error = Config::read(EnvReader::from_map([
            ("ENVIRONMENT", "production"),
            ("SUPRSEND_API_KEY", "  "),
        ]))
        .unwrap_err();
        assert!(error.names("SUPRSEND_API_KEY"), "{error}");
        Config::read(EnvReader::from_map([
            ("ENVIRONMENT", "production"),
            ("SUPRSEND_API_KEY", "secret-key"),
        ]))
        .unwrap();
        // Development still runs without one.
        Config::read(EnvReader::from_map([("ENVIRONMENT", "development")])).unwrap();
    }
}
