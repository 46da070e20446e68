//! The variables every service shares: logs, Postgres, NATS and its streams, the bus namespace.

use std::str::FromStr;

use std::time::Duration;

use secrecy::SecretString;

use super::EnvReader;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!("expected `pretty` or `json`, got `{other}`")),
        }
    }
}

/// Variables every service reads.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// `DATABASE_URL`. Kept secret: it usually carries a password.
    pub database_url: SecretString,
    /// `NATS_URL`.
    pub nats_url: String,
    /// `LOG_FORMAT`: pretty (default) or json.
    pub log_format: LogFormat,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: traces are exported over OTLP/HTTP when set.
    pub otel_endpoint: Option<String>,
    /// `SHUTDOWN_GRACE_SECONDS`: how long in-flight work may take after SIGTERM.
    pub shutdown_grace: Duration,
    /// `DATABASE_MAX_CONNECTIONS`.
    pub database_max_connections: u32,
    /// `HOST`: the address to listen on.
    pub host: std::net::IpAddr,
    /// `BUS_NAMESPACE`: prefixes stream names and subjects so several deployments (or
    /// parallel tests) can share one NATS server. Empty in production.
    pub bus_namespace: String,
    /// `DATABASE_PASSWORD`: when set, the password for `DATABASE_URL`'s user (so the URL
    /// itself need not carry it, and a password needs no URL-encoding).
    pub database_password: Option<SecretString>,
    /// `NATS_USER` / `NATS_PASSWORD`: the service's own NATS user (both or neither).
    pub nats_auth: Option<NatsAuth>,
    /// `NATS_STREAM_REPLICAS` / `NATS_STREAM_STORAGE`: how the streams are created.
    pub streams: StreamSettings,
    /// `RELAY_WAKE_DELAY_MS`: how long the outbox relay waits after a write of its process
    /// wakes it before it looks (the write's commit lands meanwhile, and writes of that
    /// window share one publish batch and one claim commit). 0 to 1,000.
    pub relay_wake_delay: Duration,
    /// `BUS_OUTBOX`: where the service's outbox messages go (`table`, the default, or `wal`:
    /// into the write-ahead log, read back through a logical replication slot; needs
    /// `wal_level=logical`; docs/bus.md, "The WAL outbox").
    pub outbox: OutboxKind,
}

/// Where a service writes its outbox messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutboxKind {
    /// Rows of the `outbox` table, which the relay claims, publishes and deletes.
    #[default]
    Table,
    /// Logical messages in the WAL (`pg_logical_emit_message`), read from a slot.
    Wal,
}

impl FromStr for OutboxKind {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "table" => Ok(Self::Table),
            "wal" => Ok(Self::Wal),
            other => Err(format!("expected `table` or `wal`, got `{other}`")),
        }
    }
}

/// A NATS user and its password. The password never appears in Debug output or errors.
#[derive(Debug, Clone)]
pub struct NatsAuth {
    pub user: String,
    pub password: SecretString,
}

/// Where JetStream keeps a stream's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStorage {
    File,
    Memory,
}

impl FromStr for StreamStorage {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "file" => Ok(Self::File),
            "memory" => Ok(Self::Memory),
            other => Err(format!("expected `file` or `memory`, got `{other}`")),
        }
    }
}

/// How the services create the EVENTS, TASKS and CHANGES streams when they are missing.
/// Existing streams keep their settings (see `deploy/nats/streams.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// `NATS_STREAM_REPLICAS`: 1 on one server (development), 3 on the production cluster.
    pub replicas: usize,
    /// `NATS_STREAM_STORAGE`: `file` (default; survives restarts) or `memory`.
    pub storage: StreamStorage,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            storage: StreamStorage::File,
        }
    }
}

/// JetStream's limit on a stream's replicas.
pub const MAX_STREAM_REPLICAS: usize = 5;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/journal";
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

impl CommonConfig {
    /// Read the shared variables. Defaults suit local development.
    pub fn read(env: &mut EnvReader) -> Self {
        Self {
            database_url: env.secret_with_default("DATABASE_URL", DEFAULT_DATABASE_URL),
            nats_url: env.with_default("NATS_URL", DEFAULT_NATS_URL.to_owned()),
            log_format: env.with_default("LOG_FORMAT", LogFormat::Pretty),
            otel_endpoint: env.optional("OTEL_EXPORTER_OTLP_ENDPOINT"),
            shutdown_grace: env
                .seconds_with_default("SHUTDOWN_GRACE_SECONDS", Duration::from_secs(10)),
            database_max_connections: env.with_default("DATABASE_MAX_CONNECTIONS", 16),
            host: env.with_default("HOST", std::net::IpAddr::from([0, 0, 0, 0])),
            bus_namespace: read_bus_namespace(env),
            database_password: env.optional_secret("DATABASE_PASSWORD"),
            nats_auth: read_nats_auth(env),
            streams: read_stream_settings(env),
            relay_wake_delay: read_relay_wake_delay(env),
            outbox: env.with_default("BUS_OUTBOX", OutboxKind::Table),
        }
    }

    /// A config for tests and tools, pointing at the given database and NATS server.
    pub fn for_tests(database_url: &str, nats_url: &str) -> Self {
        Self {
            database_url: SecretString::from(database_url.to_owned()),
            nats_url: nats_url.to_owned(),
            log_format: LogFormat::Pretty,
            otel_endpoint: None,
            shutdown_grace: Duration::from_secs(5),
            database_max_connections: 8,
            host: std::net::IpAddr::from([127, 0, 0, 1]),
            bus_namespace: String::new(),
            database_password: None,
            nats_auth: None,
            streams: StreamSettings::default(),
            relay_wake_delay: DEFAULT_RELAY_WAKE_DELAY,
            outbox: OutboxKind::Table,
        }
    }
}

/// The default of `RELAY_WAKE_DELAY_MS`.
pub const DEFAULT_RELAY_WAKE_DELAY: Duration = Duration::from_millis(2);
/// The largest `RELAY_WAKE_DELAY_MS`: beyond it the relay's slow poll (1 s) would be as good.
const MAX_RELAY_WAKE_DELAY_MS: u64 = 1_000;

fn read_relay_wake_delay(env: &mut EnvReader) -> Duration {
    match env.optional::<u64>("RELAY_WAKE_DELAY_MS") {
        None => DEFAULT_RELAY_WAKE_DELAY,
        Some(millis) if millis <= MAX_RELAY_WAKE_DELAY_MS => Duration::from_millis(millis),
        Some(millis) => {
            env.reject(
                "RELAY_WAKE_DELAY_MS",
                format!("{millis} is above the limit of {MAX_RELAY_WAKE_DELAY_MS}"),
            );
            DEFAULT_RELAY_WAKE_DELAY
        }
    }
}

fn read_nats_auth(env: &mut EnvReader) -> Option<NatsAuth> {
    let user: Option<String> = env.optional("NATS_USER");
    let password = env.optional_secret("NATS_PASSWORD");
    match (user, password) {
        (Some(user), Some(password)) => Some(NatsAuth { user, password }),
        (None, None) => None,
        (Some(_), None) => {
            env.reject("NATS_PASSWORD", "is required when NATS_USER is set");
            None
        }
        (None, Some(_)) => {
            env.reject("NATS_USER", "is required when NATS_PASSWORD is set");
            None
        }
    }
}

fn read_stream_settings(env: &mut EnvReader) -> StreamSettings {
    let defaults = StreamSettings::default();
    let replicas = env.with_default("NATS_STREAM_REPLICAS", defaults.replicas);
    let replicas = if (1..=MAX_STREAM_REPLICAS).contains(&replicas) {
        replicas
    } else {
        env.reject(
            "NATS_STREAM_REPLICAS",
            format!(
                "`{replicas}` is out of range: 1 to {MAX_STREAM_REPLICAS} (1 on a single server, \
                 3 on a 3-node cluster)"
            ),
        );
        defaults.replicas
    };
    StreamSettings {
        replicas,
        storage: env.with_default("NATS_STREAM_STORAGE", defaults.storage),
    }
}

fn read_bus_namespace(env: &mut EnvReader) -> String {
    let namespace: String = env.with_default("BUS_NAMESPACE", String::new());
    let valid = namespace
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        env.reject(
            "BUS_NAMESPACE",
            format!("`{namespace}` may contain only letters, digits, `_` and `-`"),
        );
        return String::new();
    }
    namespace
}
