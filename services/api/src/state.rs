//! `AppState`: what every handler can reach, built once per replica at start.

use std::sync::Arc;

use bus::Bus;
use platform::s3::ObjectStore;

use crate::config::Config;
use crate::http::rate_limit::IpRateLimiter;
use crate::modules::auth::google::provider_keys::ProviderKeys;
use crate::modules::auth::session_cache::SessionCache;
use crate::modules::logs::writer::RequestLogSink;
use crate::modules::subscriptions::api_keys::verifier::{INVALIDATION_SUBJECT, KeyVerifier};
use crate::procedures::api_key::state::OpenApiState;
use crate::service_error::Error;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: sqlx::PgPool,
    pub bus: Bus,
    pub config: Arc<Config>,
    /// Per-client-IP limit on the sign-in endpoints.
    pub auth_limiter: Arc<IpRateLimiter>,
    /// Outgoing HTTP (Google's token endpoint and keys): no redirects followed, bounded
    /// timeouts (each Google call by `GOOGLE_HTTP_TIMEOUT_SECONDS`, which overrides the
    /// client's own 15 s).
    pub http: reqwest::Client,
    /// API key verification (cached, shared by every request of this replica).
    pub api_keys: Arc<KeyVerifier>,
    /// Open API request logs, written in batches off the request path.
    pub request_logs: RequestLogSink,
    /// Open API per-key rate limits and cached key contexts.
    pub open_api: Arc<OpenApiState>,
    /// Signs `sync.token` tokens (`SYNC_TOKEN_SECRET`).
    pub sync_tokens: sync_protocol::TokenKey,
    /// The bucket of attachments (`S3_*`).
    pub storage: ObjectStore,
    /// Google's ID token signing keys (JWKS), cached.
    pub google_keys: Arc<ProviderKeys>,
    /// Verified sessions (`SESSION_CACHE_*`), dropped on revocation on every replica.
    pub sessions: Arc<SessionCache>,
}

impl AppState {
    pub fn new(
        db: sqlx::PgPool,
        bus: Bus,
        nats: async_nats::Client,
        config: Config,
        request_logs: RequestLogSink,
    ) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(15))
            .build()
            .map_err(|error| Error::HttpClient(error.to_string()))?;
        let api_keys = Arc::new(KeyVerifier::new(
            db.clone(),
            nats,
            bus.subject(INVALIDATION_SUBJECT),
            &config.api_keys,
        ));
        let sessions = Arc::new(SessionCache::new(&config.session_cache));
        Ok(Self {
            db,
            bus,
            api_keys,
            sessions,
            storage: ObjectStore::new(&config.s3),
            auth_limiter: Arc::new(IpRateLimiter::per_minute(config.auth_rate_limit_per_minute)),
            sync_tokens: sync_protocol::TokenKey::new(config.sync_token_secret.clone()),
            config: Arc::new(config),
            http,
            request_logs,
            open_api: Arc::new(OpenApiState::default()),
            google_keys: Arc::new(ProviderKeys::default()),
        })
    }
}
