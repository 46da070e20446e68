//! The api's configuration, from the environment (ARCHITECTURE §7). Every variable is read
//! and every bad one is reported by name before the service starts.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use platform::bootstrap::ServiceConfig;
use platform::config::{CommonConfig, ConfigError, EnvReader, origin_of, parse_origins};
use platform::s3::S3Config;
use secrecy::SecretString;
use url::Url;

use crate::DEFAULT_PORT;

/// `ENVIRONMENT`: development features (the dev login) are refused in production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "development" | "dev" | "test" => Ok(Self::Development),
            "production" | "prod" => Ok(Self::Production),
            other => Err(format!(
                "expected `development` or `production`, got `{other}`"
            )),
        }
    }
}

/// Google sign-in (enabled when `GOOGLE_CLIENT_ID` is set). The URLs are configuration so
/// tests (and other OIDC providers) can stand in for Google.
#[derive(Debug, Clone)]
pub struct GoogleConfig {
    /// `GOOGLE_CLIENT_ID`.
    pub client_id: String,
    /// `GOOGLE_CLIENT_SECRET`.
    pub client_secret: SecretString,
    /// `GOOGLE_AUTH_URL` (default Google's authorization endpoint).
    pub auth_url: Url,
    /// `GOOGLE_TOKEN_URL` (default Google's token endpoint).
    pub token_url: Url,
    /// `GOOGLE_JWKS_URL` (default Google's signing keys): verifies ID token signatures.
    pub jwks_url: Url,
    /// `GOOGLE_ISSUER`: the `iss` the ID token must carry (default `https://accounts.google.com`;
    /// Google also issues `accounts.google.com`, accepted with it).
    pub issuer: String,
    /// `GOOGLE_REDIRECT_URL` (default `<PUBLIC_URL>/auth/google/callback`).
    pub redirect_url: Url,
    /// `GOOGLE_HTTP_TIMEOUT_SECONDS` (default 10, 1 to 60): the longest a call to the
    /// provider (code exchange, signing keys) may take, connecting through reading the body;
    /// past it the sign-in ends in `authError` instead of holding the browser.
    pub http_timeout: Duration,
}

impl GoogleConfig {
    pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
    pub const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(60);
}

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

/// Attachment limits and lifetimes (`CDN_*`, docs/cdn.md).
#[derive(Debug, Clone)]
pub struct CdnConfig {
    /// `CDN_MAX_UPLOAD_BYTES`: the largest file `cdn.createUploadUrl` accepts (default 25 MB,
    /// 26,214,400 bytes).
    pub max_upload_bytes: u64,
    /// `CDN_UPLOAD_URL_TTL_SECONDS`: how long an upload URL is valid (default 900, 15 minutes).
    pub upload_url_ttl: Duration,
    /// `CDN_DOWNLOAD_URL_TTL_SECONDS`: how long a download URL is valid (default 900).
    pub download_url_ttl: Duration,
    /// `CDN_ABANDONED_UPLOAD_SECONDS`: an upload still `pending` (or `verifying`) this long
    /// after it was started is expired by `clean-up-abandoned-uploads` and its objects
    /// deleted (default 3600). At least the upload URL's lifetime.
    pub abandoned_after: Duration,
}

impl CdnConfig {
    pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 25 * 1024 * 1024;

    fn read(env: &mut EnvReader) -> Self {
        let max_upload_bytes =
            env.with_default("CDN_MAX_UPLOAD_BYTES", Self::DEFAULT_MAX_UPLOAD_BYTES);
        // A single PUT holds at most 5 GiB.
        if max_upload_bytes == 0 || max_upload_bytes > 5 * 1024 * 1024 * 1024 {
            env.reject("CDN_MAX_UPLOAD_BYTES", "must be between 1 and 5368709120");
        }
        let upload_url_ttl =
            env.seconds_with_default("CDN_UPLOAD_URL_TTL_SECONDS", Duration::from_secs(900));
        if upload_url_ttl.is_zero() || upload_url_ttl > platform::s3::MAX_PRESIGN_EXPIRY {
            env.reject(
                "CDN_UPLOAD_URL_TTL_SECONDS",
                "must be between 1 and 604800 (seven days)",
            );
        }
        let download_url_ttl =
            env.seconds_with_default("CDN_DOWNLOAD_URL_TTL_SECONDS", Duration::from_secs(900));
        if download_url_ttl.is_zero() || download_url_ttl > platform::s3::MAX_PRESIGN_EXPIRY {
            env.reject(
                "CDN_DOWNLOAD_URL_TTL_SECONDS",
                "must be between 1 and 604800 (seven days)",
            );
        }
        let abandoned_after =
            env.seconds_with_default("CDN_ABANDONED_UPLOAD_SECONDS", Duration::from_secs(3600));
        if abandoned_after < upload_url_ttl {
            env.reject(
                "CDN_ABANDONED_UPLOAD_SECONDS",
                "must be at least CDN_UPLOAD_URL_TTL_SECONDS (an upload may still arrive until its URL expires)",
            );
        }
        Self {
            max_upload_bytes,
            upload_url_ttl,
            download_url_ttl,
            abandoned_after,
        }
    }
}

impl Default for CdnConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: Self::DEFAULT_MAX_UPLOAD_BYTES,
            upload_url_ttl: Duration::from_secs(900),
            download_url_ttl: Duration::from_secs(900),
            abandoned_after: Duration::from_secs(3600),
        }
    }
}

/// The cache of verified sessions (see `session_cache`).
#[derive(Debug, Clone)]
pub struct SessionCacheConfig {
    /// `SESSION_CACHE_TTL_SECONDS` (default 30, 0 to 3600; 0 turns the cache off): how long a
    /// verified session is trusted without reading Postgres. Revocations through the api
    /// reach every replica at once over the bus; this bounds what a replica misses while its
    /// NATS connection is down, and a session row changed by hand in SQL.
    pub ttl: Duration,
    /// `SESSION_CACHE_CAPACITY` (default 100,000, at least 1): sessions kept per replica.
    pub capacity: u64,
}

impl SessionCacheConfig {
    pub const MAX_TTL: Duration = Duration::from_secs(3600);

    fn read(env: &mut EnvReader) -> Self {
        let ttl = env.seconds_with_default("SESSION_CACHE_TTL_SECONDS", Duration::from_secs(30));
        if ttl > Self::MAX_TTL {
            env.reject("SESSION_CACHE_TTL_SECONDS", "must be 3600 or less");
        }
        let capacity = env.with_default("SESSION_CACHE_CAPACITY", 100_000_u64);
        if capacity == 0 {
            env.reject("SESSION_CACHE_CAPACITY", "must be at least 1");
        }
        Self { ttl, capacity }
    }
}

impl Default for SessionCacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            capacity: 100_000,
        }
    }
}

/// How API keys are verified (see `api_keys::verifier`).
#[derive(Debug, Clone)]
pub struct ApiKeyConfig {
    /// `API_KEY_CACHE_TTL_SECONDS`: how long a verified key is trusted without another scrypt
    /// (default 60). Also the longest a revocation can go unnoticed by a replica that missed
    /// the NATS broadcast.
    pub cache_ttl: Duration,
    /// `API_KEY_CACHE_CAPACITY`: verified keys kept per replica (default 100,000).
    pub cache_capacity: u64,
    /// `API_KEY_SCRYPT_CONCURRENCY`: scrypt runs at once per replica (default: the number of
    /// CPUs); more wait, so key checks cannot take every core from the runtime.
    pub scrypt_concurrency: usize,
    /// `API_KEY_FAILURES_PER_MINUTE`: failed verifications allowed per client IP and minute
    /// before `429 RATE_LIMITED` (default 20).
    pub failures_per_minute: u32,
}

impl ApiKeyConfig {
    fn read(env: &mut EnvReader) -> Self {
        let cache_ttl =
            env.seconds_with_default("API_KEY_CACHE_TTL_SECONDS", Duration::from_secs(60));
        if cache_ttl.is_zero() {
            env.reject("API_KEY_CACHE_TTL_SECONDS", "must be at least 1");
        }
        let cache_capacity = env.with_default("API_KEY_CACHE_CAPACITY", 100_000_u64);
        let scrypt_concurrency =
            env.with_default("API_KEY_SCRYPT_CONCURRENCY", default_scrypt_concurrency());
        if scrypt_concurrency == 0 {
            env.reject("API_KEY_SCRYPT_CONCURRENCY", "must be at least 1");
        }
        let failures_per_minute = env.with_default("API_KEY_FAILURES_PER_MINUTE", 20_u32);
        if failures_per_minute == 0 {
            env.reject("API_KEY_FAILURES_PER_MINUTE", "must be at least 1");
        }
        Self {
            cache_ttl,
            cache_capacity,
            scrypt_concurrency,
            failures_per_minute,
        }
    }
}

impl Default for ApiKeyConfig {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(60),
            cache_capacity: 100_000,
            scrypt_concurrency: default_scrypt_concurrency(),
            failures_per_minute: 20,
        }
    }
}

fn default_scrypt_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(EnvReader::from_process())
    }

    pub fn read(mut env: EnvReader) -> Result<Self, ConfigError> {
        let common = CommonConfig::read(&mut env);
        let port = platform::config::read_port(&mut env, DEFAULT_PORT);
        let environment = env.with_default("ENVIRONMENT", Environment::Development);
        let production = environment == Environment::Production;
        let auth_dev_login = env.flag("AUTH_DEV_LOGIN", false);
        if auth_dev_login && production {
            env.reject(
                "AUTH_DEV_LOGIN",
                "the dev login cannot be enabled when ENVIRONMENT=production",
            );
        }
        let public_url = read_url(&mut env, "PUBLIC_URL", "http://localhost:8080");
        let app_url = read_url(&mut env, "APP_URL", "http://localhost:3000");
        let allowed_origins = match env.optional::<String>("ALLOWED_ORIGINS") {
            Some(list) => parse_origins(&mut env, "ALLOWED_ORIGINS", &list),
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
        let session_cache = SessionCacheConfig::read(&mut env);
        let auth_rate_limit_per_minute = env.with_default("AUTH_RATE_LIMIT_PER_MINUTE", 30_u32);
        if auth_rate_limit_per_minute == 0 {
            env.reject("AUTH_RATE_LIMIT_PER_MINUTE", "must be at least 1");
        }
        let trusted_proxies = match env.optional::<String>("TRUSTED_PROXIES") {
            Some(list) => parse_cidrs(&mut env, &list),
            None => Vec::new(),
        };
        let google = read_google(&mut env, &public_url, environment);
        let api_keys = ApiKeyConfig::read(&mut env);
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
        let sync_token_secret = read_sync_token_secret(&mut env, production);
        let sync_token_ttl =
            env.seconds_with_default("SYNC_TOKEN_TTL_SECONDS", Duration::from_secs(900));
        if sync_token_ttl.is_zero() {
            env.reject("SYNC_TOKEN_TTL_SECONDS", "must be at least 1");
        }
        let s3 = S3Config::read(&mut env, production);
        let cdn = CdnConfig::read(&mut env);
        env.finish()?;
        Ok(Self {
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
        })
    }

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

impl ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.common
    }
    fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.common.host, self.port)
    }
}

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
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dev_login_is_refused_in_production_and_lists_are_checked() {
        let error = Config::read(EnvReader::from_map([
            ("ENVIRONMENT", "production"),
            ("AUTH_DEV_LOGIN", "true"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, nonsense"),
            ("ALLOWED_ORIGINS", "https://app.example.com,ftp://x"),
            ("GOOGLE_CLIENT_ID", "id"),
        ]))
        .unwrap_err();
        assert!(error.names("AUTH_DEV_LOGIN"));
        assert!(error.names("TRUSTED_PROXIES"));
        assert!(error.names("ALLOWED_ORIGINS"));
        assert!(error.names("GOOGLE_CLIENT_SECRET"));
        assert!(error.names("S3_ACCESS_KEY_ID"));
    }

    /// Issue 15: `GOOGLE_TOKEN_URL` accepted `http://` in production.
    #[test]
    fn google_urls_must_be_https_outside_development() {
        let http_urls = [
            ("GOOGLE_CLIENT_ID", "id"),
            ("GOOGLE_CLIENT_SECRET", "secret"),
            ("GOOGLE_AUTH_URL", "http://idp.example/auth"),
            ("GOOGLE_TOKEN_URL", "http://idp.example/token"),
            ("GOOGLE_JWKS_URL", "http://idp.example/certs"),
        ];
        let mut production = vec![("ENVIRONMENT", "production")];
        production.extend(http_urls);
        let error = Config::read(EnvReader::from_map(production)).unwrap_err();
        for name in ["GOOGLE_AUTH_URL", "GOOGLE_TOKEN_URL", "GOOGLE_JWKS_URL"] {
            assert!(error.names(name), "{name}: {error}");
        }
        let development = Config::read(EnvReader::from_map(http_urls)).unwrap();
        let google = development.google.unwrap();
        assert_eq!(google.jwks_url.as_str(), "http://idp.example/certs");
    }

    #[test]
    fn the_google_http_timeout_is_bounded() {
        let google = [
            ("GOOGLE_CLIENT_ID", "id"),
            ("GOOGLE_CLIENT_SECRET", "secret"),
        ];
        let default = Config::read(EnvReader::from_map(google)).unwrap();
        assert_eq!(
            default.google.unwrap().http_timeout,
            Duration::from_secs(10)
        );
        let mut three = google.to_vec();
        three.push(("GOOGLE_HTTP_TIMEOUT_SECONDS", "3"));
        let three = Config::read(EnvReader::from_map(three)).unwrap();
        assert_eq!(three.google.unwrap().http_timeout, Duration::from_secs(3));
        for bad in ["0", "61", "-1", "ten"] {
            let mut env = google.to_vec();
            env.push(("GOOGLE_HTTP_TIMEOUT_SECONDS", bad));
            let error = Config::read(EnvReader::from_map(env)).unwrap_err();
            assert!(error.names("GOOGLE_HTTP_TIMEOUT_SECONDS"), "{bad}: {error}");
        }
    }

    #[test]
    fn cdn_limits_are_checked() {
        let error = Config::read(EnvReader::from_map([
            ("CDN_MAX_UPLOAD_BYTES", "0"),
            ("CDN_UPLOAD_URL_TTL_SECONDS", "604801"),
            ("CDN_DOWNLOAD_URL_TTL_SECONDS", "0"),
        ]))
        .unwrap_err();
        assert!(error.names("CDN_MAX_UPLOAD_BYTES"), "{error}");
        assert!(error.names("CDN_UPLOAD_URL_TTL_SECONDS"), "{error}");
        assert!(error.names("CDN_DOWNLOAD_URL_TTL_SECONDS"), "{error}");
        let error = Config::read(EnvReader::from_map([
            ("CDN_UPLOAD_URL_TTL_SECONDS", "600"),
            ("CDN_ABANDONED_UPLOAD_SECONDS", "300"),
        ]))
        .unwrap_err();
        assert!(error.names("CDN_ABANDONED_UPLOAD_SECONDS"), "{error}");
        let config = Config::read(EnvReader::from_map([("S3_BUCKET", "files")])).unwrap();
        assert_eq!(config.cdn.max_upload_bytes, 26_214_400);
        assert_eq!(config.cdn.upload_url_ttl, Duration::from_secs(900));
        assert_eq!(config.s3.bucket, "files");
    }

    #[test]
    fn the_sync_token_secret_is_checked() {
        let short =
            Config::read(EnvReader::from_map([("SYNC_TOKEN_SECRET", "short")])).unwrap_err();
        assert!(short.names("SYNC_TOKEN_SECRET"));
        assert!(
            !short.to_string().contains("short"),
            "the secret is not echoed"
        );
        let default_in_production = Config::read(EnvReader::from_map([
            ("ENVIRONMENT", "production"),
            ("SESSION_COOKIE_SECURE", "true"),
        ]))
        .unwrap_err();
        assert!(default_in_production.names("SYNC_TOKEN_SECRET"));
    }

    #[test]
    fn the_session_cache_settings_are_checked() {
        let default = Config::read(EnvReader::from_map([("PORT", "8080")])).unwrap();
        assert_eq!(default.session_cache.ttl, Duration::from_secs(30));
        assert_eq!(default.session_cache.capacity, 100_000);
        let off = Config::read(EnvReader::from_map([("SESSION_CACHE_TTL_SECONDS", "0")])).unwrap();
        assert!(off.session_cache.ttl.is_zero());
        for (name, bad) in [
            ("SESSION_CACHE_TTL_SECONDS", "3601"),
            ("SESSION_CACHE_TTL_SECONDS", "-1"),
            ("SESSION_CACHE_TTL_SECONDS", "soon"),
            ("SESSION_CACHE_CAPACITY", "0"),
        ] {
            let error = Config::read(EnvReader::from_map([(name, bad)])).unwrap_err();
            assert!(error.names(name), "{name}={bad}: {error}");
        }
    }

    #[test]
    fn defaults_suit_development() {
        let config = Config::read(EnvReader::from_map([("TRUSTED_PROXIES", "10.0.0.1")])).unwrap();
        assert!(!config.session_cookie_secure);
        assert!(config.google.is_none());
        assert_eq!(
            config.allowed_origins,
            vec!["http://localhost:3000", "http://localhost:8080"]
        );
        assert_eq!(config.trusted_proxies[0].to_string(), "10.0.0.1/32");
    }
}
