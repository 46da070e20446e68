//! The configuration's sections: Google sign-in, attachments (CDN), the session cache and
//! API keys, each with its defaults.

use std::time::Duration;

use platform::config::EnvReader;
use secrecy::SecretString;
use url::Url;

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

    pub(crate) fn read(env: &mut EnvReader) -> Self {
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

    pub(crate) fn read(env: &mut EnvReader) -> Self {
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
    pub(crate) fn read(env: &mut EnvReader) -> Self {
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
