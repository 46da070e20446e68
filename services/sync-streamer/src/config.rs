//! The streamer's configuration (README "Configuration"): the shared variables plus the sync
//! settings, every bad one named at start.

use std::time::Duration;

use platform::config::{CommonConfig, EnvReader, Environment, FromEnvironment};
use secrecy::{ExposeSecret, SecretString};

use crate::DEFAULT_PORT;

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `PORT`.
    pub port: u16,
    pub sync: SyncConfig,
}

/// How streams and the materializer behave.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// `SYNC_TOKEN_SECRET`: verifies sync tokens; the api's value (≥ 32 bytes; with
    /// `ENVIRONMENT=production` the development default and placeholders are refused).
    pub token_secret: SecretString,
    /// `SYNC_TOKEN_MAX_LIFETIME_SECONDS`: the longest `expiresAt - issuedAt` a token may claim
    /// (default 900, the api's default `SYNC_TOKEN_TTL_SECONDS`; at least the api's value).
    pub token_max_lifetime: Duration,
    /// `SYNC_HEARTBEAT_SECONDS` (default 10).
    pub heartbeat: Duration,
    /// `SYNC_RETRY_MS`: the SSE `retry:` hint (default 2000).
    pub retry_ms: u64,
    /// `SYNC_CHUNK_ROWS`: rows per catch-up page (default 500).
    pub chunk_rows: usize,
    /// `SYNC_CLIENT_BUFFER_BYTES`: live changesets a client may have waiting, in bytes, before
    /// it is disconnected as too slow (default 1 MiB).
    pub client_buffer_bytes: usize,
    /// `SYNC_MAX_STREAMS_PER_USER`: open streams per user and replica (default 10).
    pub max_streams_per_user: usize,
    /// `SYNC_TOMBSTONE_RETENTION_SECONDS`: how long tombstones stay in the read model
    /// (default 30 days); older cursors get a `reset`.
    pub tombstone_retention: Duration,
    /// `SYNC_PURGE_INTERVAL_SECONDS`: how often the leader purges old tombstones (default 3600).
    pub purge_interval: Duration,
    /// `SYNC_LEASE_MS`: the materializer's leader lease (default 3000); a replica takes over
    /// at most this long (plus one poll, a third of it) after the leader dies.
    pub lease: Duration,
    /// `SYNC_MATERIALIZER_BATCH`: changesets applied per transaction at most (default 1000).
    pub materializer_batch: usize,
    /// `SYNC_RING_CAPACITY`: recent changesets each replica keeps for the catch-up → live
    /// handoff (default 20000).
    pub ring_capacity: usize,
    /// `SYNC_CATCHUP_CONCURRENCY`: catch-ups reading Postgres at once per replica (default 8).
    pub catchup_concurrency: usize,
    /// `ALLOWED_ORIGINS`: the origins whose pages may open streams (CORS), comma-separated;
    /// by default the origin of `APP_URL` (default `http://localhost:3000`), as the api.
    pub allowed_origins: Vec<String>,
    /// `SYNC_TAIL_READY_LAG_SECONDS`: `/readyz` fails while the oldest changeset the tail has
    /// not taken has been in CHANGES longer than this (default 5).
    pub tail_ready_lag: Duration,
    /// `SYNC_TAIL_STALL_SECONDS`: a tail that took nothing for this long while CHANGES has
    /// changesets after its position this old gets a new consumer (default 3).
    pub tail_stall: Duration,
    /// `SYNC_TRANSACTION_WAIT_MS`: how long a stream waits for the remaining parts of a
    /// transaction it follows several scopes of, and the materializer for those of any
    /// transaction, before it goes on without them (default 2000; docs/sync.md).
    pub transaction_wait: Duration,
}

impl SyncConfig {
    fn read(env: &mut EnvReader) -> Self {
        // The api applies the same rule to the same variable: a secret anyone can know lets
        // anyone sign a token for any user.
        let production = platform::config::read_environment(env) == Environment::Production;
        let token_secret =
            env.secret_with_default("SYNC_TOKEN_SECRET", sync_protocol::DEVELOPMENT_SECRET);
        if let Some(problem) =
            sync_protocol::secret_problem(token_secret.expose_secret(), production)
        {
            env.reject("SYNC_TOKEN_SECRET", problem);
        }
        let positive = |env: &mut EnvReader, name: &str, default: u64| -> u64 {
            let value = env.with_default(name, default);
            if value == 0 {
                env.reject(name, "must be at least 1");
                return default;
            }
            value
        };
        let token_max_lifetime = Duration::from_secs(positive(
            env,
            "SYNC_TOKEN_MAX_LIFETIME_SECONDS",
            sync_protocol::DEFAULT_MAX_LIFETIME.as_secs(),
        ));
        let heartbeat = Duration::from_secs(positive(env, "SYNC_HEARTBEAT_SECONDS", 10));
        let retry_ms = positive(env, "SYNC_RETRY_MS", 2000);
        let chunk_rows = positive(env, "SYNC_CHUNK_ROWS", 500) as usize;
        let client_buffer_bytes = positive(env, "SYNC_CLIENT_BUFFER_BYTES", 1 << 20) as usize;
        let max_streams_per_user = positive(env, "SYNC_MAX_STREAMS_PER_USER", 10) as usize;
        let tombstone_retention = Duration::from_secs(positive(
            env,
            "SYNC_TOMBSTONE_RETENTION_SECONDS",
            30 * 24 * 3600,
        ));
        let purge_interval =
            Duration::from_secs(positive(env, "SYNC_PURGE_INTERVAL_SECONDS", 3600));
        let lease = Duration::from_millis(positive(env, "SYNC_LEASE_MS", 3000));
        let materializer_batch = positive(env, "SYNC_MATERIALIZER_BATCH", 1000) as usize;
        let ring_capacity = positive(env, "SYNC_RING_CAPACITY", 20_000) as usize;
        let catchup_concurrency = positive(env, "SYNC_CATCHUP_CONCURRENCY", 8) as usize;
        let allowed_origins = read_allowed_origins(env);
        let tail_ready_lag = Duration::from_secs(positive(env, "SYNC_TAIL_READY_LAG_SECONDS", 5));
        let tail_stall = Duration::from_secs(positive(env, "SYNC_TAIL_STALL_SECONDS", 3));
        let transaction_wait =
            Duration::from_millis(positive(env, "SYNC_TRANSACTION_WAIT_MS", 2000));
        Self {
            token_secret,
            token_max_lifetime,
            heartbeat,
            retry_ms,
            chunk_rows,
            client_buffer_bytes,
            max_streams_per_user,
            tombstone_retention,
            purge_interval,
            lease,
            materializer_batch,
            ring_capacity,
            catchup_concurrency,
            allowed_origins,
            tail_ready_lag,
            tail_stall,
            transaction_wait,
        }
    }
}

/// `ALLOWED_ORIGINS`, else the origin of `APP_URL`: the same variables, and the same default,
/// as the api's, so one setting serves both.
fn read_allowed_origins(env: &mut EnvReader) -> Vec<String> {
    if let Some(list) = env.optional::<String>("ALLOWED_ORIGINS") {
        return platform::config::parse_origins(env, "ALLOWED_ORIGINS", &list);
    }
    let app_url: String = env.with_default("APP_URL", DEFAULT_APP_URL.to_owned());
    match url::Url::parse(&app_url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {
            vec![platform::config::origin_of(&url)]
        }
        _ => {
            env.reject(
                "APP_URL",
                format!("`{app_url}` is not an absolute http(s) URL"),
            );
            Vec::new()
        }
    }
}

/// The web app's address in development (the api's default too).
const DEFAULT_APP_URL: &str = "http://localhost:3000";

impl Default for SyncConfig {
    fn default() -> Self {
        Self::read(&mut EnvReader::from_map(
            std::iter::empty::<(String, String)>(),
        ))
    }
}

impl FromEnvironment for Config {
    const DEFAULT_PORT: u16 = DEFAULT_PORT;

    fn read_own(common: CommonConfig, port: u16, env: &mut EnvReader) -> Self {
        let sync = SyncConfig::read(env);
        Self { common, port, sync }
    }
}

impl Config {
    /// Defaults for tests: the given database and NATS server, a 1 s lease.
    pub fn for_tests(database_url: &str, nats_url: &str) -> Self {
        Self {
            common: CommonConfig::for_tests(database_url, nats_url),
            port: 0,
            sync: SyncConfig {
                lease: Duration::from_millis(1500),
                ..SyncConfig::default()
            },
        }
    }
}

platform::impl_service_config!(Config);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bad_sync_variables_are_named() {
        let error = Config::read(EnvReader::from_map([
            ("SYNC_TOKEN_SECRET", "short"),
            ("SYNC_HEARTBEAT_SECONDS", "0"),
            ("SYNC_CHUNK_ROWS", "many"),
        ]))
        .unwrap_err();
        assert!(error.names("SYNC_TOKEN_SECRET"));
        assert!(error.names("SYNC_HEARTBEAT_SECONDS"));
        assert!(error.names("SYNC_CHUNK_ROWS"));
        // The secret's value never appears in the message.
        assert!(!error.to_string().contains("short"));
    }

    #[test]
    fn the_development_or_a_placeholder_secret_is_refused_in_production() {
        let default_in_production =
            Config::read(EnvReader::from_map([("ENVIRONMENT", "production")])).unwrap_err();
        assert!(default_in_production.names("SYNC_TOKEN_SECRET"));
        let placeholder = Config::read(EnvReader::from_map([
            ("ENVIRONMENT", "production"),
            (
                "SYNC_TOKEN_SECRET",
                "REPLACE_ME_WITH_32_OR_MORE_RANDOM_BYTES",
            ),
        ]))
        .unwrap_err();
        assert!(placeholder.names("SYNC_TOKEN_SECRET"));
        assert!(!placeholder.to_string().contains("REPLACE_ME"));
        let generated = Config::read(EnvReader::from_map([
            ("ENVIRONMENT", "production"),
            (
                "SYNC_TOKEN_SECRET",
                "q3X9vT0bW2e8Lr5NfK7yHcZ1aMdP4uGs6jQiVoEx",
            ),
            ("SYNC_TOKEN_MAX_LIFETIME_SECONDS", "3600"),
        ]))
        .unwrap();
        assert_eq!(generated.sync.token_max_lifetime, Duration::from_secs(3600));
    }

    #[test]
    fn defaults_suit_development() {
        let config = Config::read(EnvReader::from_map([("PORT", "9001")])).unwrap();
        assert_eq!(config.port, 9001);
        assert_eq!(config.sync.heartbeat, Duration::from_secs(10));
        assert_eq!(config.sync.chunk_rows, 500);
        assert_eq!(config.sync.token_max_lifetime, Duration::from_secs(900));
        assert_eq!(config.sync.allowed_origins, vec!["http://localhost:3000"]);
    }

    #[test]
    fn allowed_origins_come_from_the_list_or_the_app_url() {
        let listed = Config::read(EnvReader::from_map([(
            "ALLOWED_ORIGINS",
            "https://app.example.com, http://localhost:5173/",
        )]))
        .unwrap();
        assert_eq!(
            listed.sync.allowed_origins,
            vec!["https://app.example.com", "http://localhost:5173"]
        );
        let from_app = Config::read(EnvReader::from_map([(
            "APP_URL",
            "https://journal.example.com/app",
        )]))
        .unwrap();
        assert_eq!(
            from_app.sync.allowed_origins,
            vec!["https://journal.example.com"]
        );
        let bad = Config::read(EnvReader::from_map([(
            "ALLOWED_ORIGINS",
            "app.example.com",
        )]))
        .unwrap_err();
        assert!(bad.names("ALLOWED_ORIGINS"));
    }
}
