//! The api's configuration, from the environment (ARCHITECTURE §7). Every variable is read
//! and every bad one is reported by name before the service starts.

pub mod sections;

use std::time::Duration;

use ipnet::IpNet;
/// `ENVIRONMENT`: development features (the dev login) are refused in production.
pub use platform::config::Environment;
use platform::config::{
    CommonConfig, EnvReader, FromEnvironment, origin_of, parse_origins, read_environment,
};
use platform::s3::S3Config;
use secrecy::SecretString;
use url::Url;

pub use self::sections::{ApiKeyConfig, CdnConfig, GoogleConfig, SessionCacheConfig};
use crate::DEFAULT_PORT;

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `PORT`.
    pub port: u16,
    /// `ENVIRONMENT` (default development).
    pub environment: Environment,
    /// `AUTH_DEV_LOGIN`: enables `POST /auth/dev/login` (default false; refused in production).
    pub auth_dev_login: bool,
    /// `PUBLIC_URL`: where clients reach this api (default `http://localhost:8080`).
    pub public_url: Url,
    /// `APP_URL`: the web app; sign-in ends there (default `http://localhost:3000`).
    pub app_url: Url,
    /// `ALLOWED_ORIGINS`: comma-separated origins that may call with cookies (CSRF check) and
    /// that CORS admits (default: the origins of `APP_URL` and `PUBLIC_URL`).
    pub allowed_origins: Vec<String>,
    /// `SESSION_COOKIE_SECURE`: mark the session cookie `Secure` (default true in production).
    pub session_cookie_secure: bool,
    /// `SESSION_FRESH_AGE_SECONDS`: how young a session must be for sensitive procedures
    /// (default one day, as Better Auth's `freshAge`).
    pub session_fresh_age: Duration,
    /// `SESSION_ABSOLUTE_LIFETIME_DAYS` (default 30): no session outlives this from its
    /// sign-in, however often it slides.
    pub session_absolute_lifetime: Duration,
    /// The cache of verified sessions (`SESSION_CACHE_*`).
    pub session_cache: SessionCacheConfig,
    /// `AUTH_RATE_LIMIT_PER_MINUTE`: sign-in requests per client IP and minute (default 30).
    pub auth_rate_limit_per_minute: u32,
    /// `TRUSTED_PROXIES`: comma-separated CIDRs whose `X-Forwarded-For` is believed (default
    /// none: the client IP is the peer address).
    pub trusted_proxies: Vec<IpNet>,
    /// Google sign-in; `None` when `GOOGLE_CLIENT_ID` is unset.
    pub google: Option<GoogleConfig>,
    /// API key verification (the open API's `x-api-key`).
    pub api_keys: ApiKeyConfig,
    /// `CRON_SECRET`: the bearer secret of the cron hooks (`/cron/<job>`); unset, the
    /// hooks answer `404 CRON_HOOKS_DISABLED`. At least 16 characters.
    pub cron_job_secret: Option<SecretString>,
    /// `SOFT_DELETE_RETENTION_DAYS` (default 30): soft-deleted rows older than this are
    /// purged by the daily `purge-retention` job.
    pub soft_delete_retention: Duration,
    /// `ACCOUNT_PURGE_RETENTION_DAYS` (default 30; 0 purges at the next run): how long after
    /// `users.delete` the daily `purge-retention` job purges what the account owned
    /// (docs/api.md, "Account deletion").
    pub account_purge_retention: Duration,
    /// `REQUEST_LOG_RETENTION_DAYS` (default 30): open API request logs older than this are
    /// deleted by the daily `purge-retention` job.
    pub request_log_retention: Duration,
    /// `SYNC_TOKEN_SECRET`: signs `sync.token` tokens; the sync-streamer must have the same
    /// value (at least 32 bytes; a development default, refused in production).
    pub sync_token_secret: SecretString,
    /// `SYNC_TOKEN_TTL_SECONDS`: how long a sync token (and a stream opened with it) lasts
    /// (default 900).
    pub sync_token_ttl: Duration,
    /// `S3_*`: the bucket attachments go to (the same one the worker verifies them in).
    pub s3: S3Config,
    /// Attachments (`cdn.*`).
    pub cdn: CdnConfig,
}

impl FromEnvironment for Config {
    const DEFAULT_PORT: u16 = DEFAULT_PORT;

    fn read_own(common: CommonConfig, port: u16, env: &mut EnvReader) -> Self {
        let environment = read_environment(env);
        let production = environment == Environment::Production;
        let auth_dev_login = env.flag("AUTH_DEV_LOGIN", false);
        if auth_dev_login && production {
            env.reject(
                "AUTH_DEV_LOGIN",
                "the dev login cannot be enabled when ENVIRONMENT=production",
            );
        }
        let public_url = read_url(env, "PUBLIC_URL", "http://localhost:8080");
        let app_url = read_url(env, "APP_URL", "http://localhost:3000");
        let allowed_origins = match env.optional::<String>("ALLOWED_ORIGINS") {
            Some(list) => parse_origins(env, "ALLOWED_ORIGINS", &list),
            None => {
                let mut origins = vec![origin_of(&app_url), origin_of(&public_url)];
                origins.dedup();
                origins
            }
        };
        let session_cookie_secure = env.flag("SESSION_COOKIE_SECURE", production);
        let session_fresh_age =
            env.seconds_with_default("SESSION_FRESH_AGE_SECONDS", Duration::from_secs(86_400));
        let session_absolute_days: u64 = env.with_default("SESSION_ABSOLUTE_LIFETIME_DAYS", 30);
        if session_absolute_days == 0 {
            env.reject("SESSION_ABSOLUTE_LIFETIME_DAYS", "must be at least 1");
        }
        let session_cache = SessionCacheConfig::read(env);
        let auth_rate_limit_per_minute = env.with_default("AUTH_RATE_LIMIT_PER_MINUTE", 30_u32);
        if auth_rate_limit_per_minute == 0 {
            env.reject("AUTH_RATE_LIMIT_PER_MINUTE", "must be at least 1");
        }
        let trusted_proxies = match env.optional::<String>("TRUSTED_PROXIES") {
            Some(list) => parse_cidrs(env, &list),
            None => Vec::new(),
        };
        let google = read_google(env, &public_url, environment);
        let api_keys = ApiKeyConfig::read(env);
        let cron_job_secret = env.optional::<String>("CRON_SECRET");
        if cron_job_secret
            .as_ref()
            .is_some_and(|secret| secret.trim().chars().count() < 16)
        {
            env.reject("CRON_SECRET", "must be at least 16 characters");
        }
        let retention_days: u64 = env.with_default("SOFT_DELETE_RETENTION_DAYS", 30);
        if retention_days == 0 {
            env.reject("SOFT_DELETE_RETENTION_DAYS", "must be at least 1");
        }
        let account_purge_days: u64 = env.with_default("ACCOUNT_PURGE_RETENTION_DAYS", 30);
        let request_log_retention_days: u64 = env.with_default("REQUEST_LOG_RETENTION_DAYS", 30);
        if request_log_retention_days == 0 {
            env.reject("REQUEST_LOG_RETENTION_DAYS", "must be at least 1");
        }
        let sync_token_secret = read_sync_token_secret(env, production);
        let sync_token_ttl =
            env.seconds_with_default("SYNC_TOKEN_TTL_SECONDS", Duration::from_secs(900));
        if sync_token_ttl.is_zero() {
            env.reject("SYNC_TOKEN_TTL_SECONDS", "must be at least 1");
        }
        let s3 = S3Config::read(env, production);
        let cdn = CdnConfig::read(env);
        Self {
            common,
            port,
            environment,
            auth_dev_login,
            public_url,
            app_url,
            allowed_origins,
            session_cookie_secure,
            session_fresh_age,
            session_absolute_lifetime: Duration::from_secs(
                session_absolute_days.saturating_mul(86_400),
            ),
            session_cache,
            auth_rate_limit_per_minute,
            trusted_proxies,
            google,
            api_keys,
            cron_job_secret: cron_job_secret
                .map(|secret| SecretString::from(secret.trim().to_owned())),
            soft_delete_retention: Duration::from_secs(retention_days.saturating_mul(86_400)),
            account_purge_retention: Duration::from_secs(account_purge_days.saturating_mul(86_400)),
            request_log_retention: Duration::from_secs(
                request_log_retention_days.saturating_mul(86_400),
            ),
            sync_token_secret,
            sync_token_ttl,
            s3,
            cdn,
        }
    }
}

impl Config {
    /// Defaults for tests: the given database and NATS server, dev login on, no Google.
    pub fn for_tests(database_url: &str, nats_url: &str) -> Self {
        let localhost = |port: u16| Url::parse(&format!("http://localhost:{port}"));
        let (Ok(public_url), Ok(app_url)) = (localhost(8080), localhost(3000)) else {
            unreachable!("constant URLs parse")
        };
        Self {
            common: CommonConfig::for_tests(database_url, nats_url),
            port: 0,
            environment: Environment::Development,
            auth_dev_login: true,
            allowed_origins: vec![origin_of(&app_url), origin_of(&public_url)],
            public_url,
            app_url,
            session_cookie_secure: false,
            session_fresh_age: Duration::from_secs(86_400),
            session_absolute_lifetime: Duration::from_secs(30 * 86_400),
            session_cache: SessionCacheConfig::default(),
            auth_rate_limit_per_minute: 1_000,
            trusted_proxies: Vec::new(),
            google: None,
            api_keys: ApiKeyConfig::default(),
            cron_job_secret: None,
            soft_delete_retention: Duration::from_secs(30 * 86_400),
            account_purge_retention: Duration::from_secs(30 * 86_400),
            request_log_retention: Duration::from_secs(30 * 86_400),
            sync_token_secret: SecretString::from(sync_protocol::DEVELOPMENT_SECRET),
            sync_token_ttl: Duration::from_secs(900),
            s3: S3Config::for_tests(platform::s3::DEFAULT_ENDPOINT, platform::s3::DEFAULT_BUCKET),
            cdn: CdnConfig::default(),
        }
    }
}

platform::impl_service_config!(Config);

/// `SYNC_TOKEN_SECRET`, checked by the rule the sync-streamer shares
/// ([`sync_protocol::secret_problem`]).
fn read_sync_token_secret(env: &mut EnvReader, production: bool) -> SecretString {
    use secrecy::ExposeSecret;
    let secret = env.secret_with_default("SYNC_TOKEN_SECRET", sync_protocol::DEVELOPMENT_SECRET);
    if let Some(problem) = sync_protocol::secret_problem(secret.expose_secret(), production) {
        env.reject("SYNC_TOKEN_SECRET", problem);
    }
    secret
}

fn read_url(env: &mut EnvReader, name: &str, default: &str) -> Url {
    let raw: String = env.with_default(name, default.to_owned());
    match Url::parse(&raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        _ => {
            env.reject(name, format!("`{raw}` is not an absolute http(s) URL"));
            Url::parse(default).unwrap_or_else(|_| unreachable!("defaults parse"))
        }
    }
}

fn parse_cidrs(env: &mut EnvReader, list: &str) -> Vec<IpNet> {
    let mut networks = Vec::new();
    for item in list
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        // A bare address is a /32 (or /128).
        let parsed = item.parse::<IpNet>().or_else(|_| {
            item.parse::<std::net::IpAddr>()
                .map(IpNet::from)
                .map_err(|_| ())
        });
        match parsed {
            Ok(network) => networks.push(network),
            Err(()) => env.reject(
                "TRUSTED_PROXIES",
                format!("`{item}` is not a CIDR such as 10.0.0.0/8 or an IP address"),
            ),
        }
    }
    networks
}

fn read_google(
    env: &mut EnvReader,
    public_url: &Url,
    environment: Environment,
) -> Option<GoogleConfig> {
    let client_id: String = env.optional("GOOGLE_CLIENT_ID")?;
    let client_secret = env.required_secret("GOOGLE_CLIENT_SECRET");
    let auth_url = read_url(
        env,
        "GOOGLE_AUTH_URL",
        "https://accounts.google.com/o/oauth2/v2/auth",
    );
    let token_url = read_url(
        env,
        "GOOGLE_TOKEN_URL",
        "https://oauth2.googleapis.com/token",
    );
    let jwks_url = read_url(
        env,
        "GOOGLE_JWKS_URL",
        "https://www.googleapis.com/oauth2/v3/certs",
    );
    // Outside development the code exchange and the signing keys travel only over TLS.
    if environment != Environment::Development {
        for (name, url) in [
            ("GOOGLE_AUTH_URL", &auth_url),
            ("GOOGLE_TOKEN_URL", &token_url),
            ("GOOGLE_JWKS_URL", &jwks_url),
        ] {
            if url.scheme() != "https" {
                env.reject(name, "must be an https URL outside development");
            }
        }
    }
    let issuer = env.with_default("GOOGLE_ISSUER", "https://accounts.google.com".to_owned());
    let default_redirect = public_url
        .join("/auth/google/callback")
        .map(|url| url.to_string())
        .unwrap_or_default();
    let redirect_url = read_url(env, "GOOGLE_REDIRECT_URL", &default_redirect);
    let http_timeout = env.seconds_with_default(
        "GOOGLE_HTTP_TIMEOUT_SECONDS",
        GoogleConfig::DEFAULT_HTTP_TIMEOUT,
    );
    if http_timeout.is_zero() || http_timeout > GoogleConfig::MAX_HTTP_TIMEOUT {
        env.reject("GOOGLE_HTTP_TIMEOUT_SECONDS", "must be between 1 and 60");
    }
    Some(GoogleConfig {
        client_id,
        client_secret: client_secret?,
        auth_url,
        token_url,
        jwks_url,
        issuer,
        redirect_url,
        http_timeout,
    })
}

#[cfg(test)]
mod tests;
