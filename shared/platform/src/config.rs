//! Configuration from environment variables.
//!
//! Every service reads its variables through an [`EnvReader`], which collects *all* missing or
//! malformed variables and reports them together, each by name, so a misconfigured deployment
//! is fixed in one pass rather than one restart per variable.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;

/// One variable that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableError {
    pub name: String,
    pub problem: String,
}

/// All the variables that could not be read, by name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub errors: Vec<VariableError>,
}

impl ConfigError {
    /// Whether a variable of this name is among the errors.
    pub fn names(&self, name: &str) -> bool {
        self.errors.iter().any(|error| error.name == name)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: ")?;
        for (index, error) in self.errors.iter().enumerate() {
            if index > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{}: {}", error.name, error.problem)?;
        }
        Ok(())
    }
}

/// Where variables come from: the process environment, or a map in tests.
pub enum EnvSource {
    Process,
    Map(HashMap<String, String>),
}

/// Reads typed variables and collects every failure.
pub struct EnvReader {
    source: EnvSource,
    errors: Vec<VariableError>,
    names_read: Option<NamesRead>,
}

/// The names of the variables a reader was asked for, whether set or not: what a service's
/// configuration reads, so deployment manifests can be checked against it (a variable no
/// service reads is a setting that silently does nothing).
#[derive(Debug, Clone, Default)]
pub struct NamesRead(Arc<Mutex<BTreeSet<String>>>);

impl NamesRead {
    pub fn names(&self) -> BTreeSet<String> {
        match self.0.lock() {
            Ok(names) => names.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn record(&self, name: &str) {
        let mut names = match self.0.lock() {
            Ok(names) => names,
            Err(poisoned) => poisoned.into_inner(),
        };
        names.insert(name.to_owned());
    }
}

impl EnvReader {
    pub fn from_process() -> Self {
        Self {
            source: EnvSource::Process,
            errors: Vec::new(),
            names_read: None,
        }
    }

    pub fn from_map<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let map = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self {
            source: EnvSource::Map(map),
            errors: Vec::new(),
            names_read: None,
        }
    }

    /// Also record the name of every variable asked for into `names_read`.
    pub fn recording(mut self, names_read: &NamesRead) -> Self {
        self.names_read = Some(names_read.clone());
        self
    }

    fn raw(&self, name: &str) -> Option<String> {
        if let Some(names_read) = &self.names_read {
            names_read.record(name);
        }
        let value = match &self.source {
            EnvSource::Process => std::env::var(name).ok(),
            EnvSource::Map(map) => map.get(name).cloned(),
        };
        // An empty variable means "not set": `FOO= cmd` is a common way to unset in shells.
        value.filter(|value| !value.trim().is_empty())
    }

    fn fail(&mut self, name: &str, problem: impl Into<String>) {
        self.errors.push(VariableError {
            name: name.to_owned(),
            problem: problem.into(),
        });
    }

    /// A variable that must be set.
    pub fn required<T>(&mut self, name: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(name) {
            None => {
                self.fail(name, "is required but not set");
                None
            }
            Some(raw) => self.parse(name, &raw),
        }
    }

    /// A variable with a default used when it is unset.
    pub fn with_default<T>(&mut self, name: &str, default: T) -> T
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(name) {
            None => default,
            Some(raw) => self.parse(name, &raw).unwrap_or(default),
        }
    }

    /// A variable that may be absent.
    pub fn optional<T>(&mut self, name: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let raw = self.raw(name)?;
        self.parse(name, &raw)
    }

    /// A secret with a development default; the value never appears in Debug output.
    pub fn secret_with_default(&mut self, name: &str, default: &str) -> SecretString {
        SecretString::from(self.raw(name).unwrap_or_else(|| default.to_owned()))
    }

    /// A secret that may be absent.
    pub fn optional_secret(&mut self, name: &str) -> Option<SecretString> {
        self.raw(name).map(SecretString::from)
    }

    /// A required secret.
    pub fn required_secret(&mut self, name: &str) -> Option<SecretString> {
        match self.raw(name) {
            None => {
                self.fail(name, "is required but not set");
                None
            }
            Some(raw) => Some(SecretString::from(raw)),
        }
    }

    /// A duration in whole seconds, e.g. `SHUTDOWN_GRACE_SECONDS=10`.
    pub fn seconds_with_default(&mut self, name: &str, default: Duration) -> Duration {
        self.optional::<u64>(name)
            .map(Duration::from_secs)
            .unwrap_or(default)
    }

    /// A boolean accepting true/false/1/0/yes/no.
    pub fn flag(&mut self, name: &str, default: bool) -> bool {
        match self.raw(name) {
            None => default,
            Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                other => {
                    self.fail(
                        name,
                        format!("`{other}` is not a boolean (use true or false)"),
                    );
                    default
                }
            },
        }
    }

    fn parse<T>(&mut self, name: &str, raw: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match raw.trim().parse::<T>() {
            Ok(value) => Some(value),
            Err(error) => {
                self.fail(
                    name,
                    format!("`{}` is invalid: {error}", redact_for_error(name, raw)),
                );
                None
            }
        }
    }

    /// Record an error found by a service-level check (e.g. two variables that conflict).
    pub fn reject(&mut self, name: &str, problem: impl Into<String>) {
        self.fail(name, problem);
    }

    /// Ok when every read succeeded, otherwise all the errors.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                errors: self.errors,
            })
        }
    }
}

/// Values of variables whose names suggest a secret are not echoed in errors.
fn redact_for_error(name: &str, raw: &str) -> String {
    let upper = name.to_ascii_uppercase();
    let secret = ["SECRET", "PASSWORD", "KEY", "TOKEN", "DATABASE_URL"]
        .iter()
        .any(|s| upper.contains(s));
    if secret {
        "<redacted>".to_owned()
    } else {
        raw.to_owned()
    }
}

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

/// `ENVIRONMENT` for services other than the api (which has its own, richer type): whether
/// development conveniences (e.g. creating a missing bucket) are allowed.
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

/// `ENVIRONMENT`, default development.
pub fn read_environment(env: &mut EnvReader) -> Environment {
    env.with_default("ENVIRONMENT", Environment::Development)
}

/// An origin as a browser sends it in `Origin`: `https://app.example.com`, no path.
pub fn origin_of(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

/// A comma-separated list of origins (`ALLOWED_ORIGINS`), each an absolute http(s) URL reduced
/// to its origin; anything else is rejected by name.
pub fn parse_origins(env: &mut EnvReader, name: &str, list: &str) -> Vec<String> {
    let mut origins = Vec::new();
    for item in list
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        match url::Url::parse(item) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => origins.push(origin_of(&url)),
            _ => env.reject(
                name,
                format!("`{item}` is not an origin such as https://app.example.com"),
            ),
        }
    }
    origins
}

/// `PORT` with the service's default port.
pub fn read_port(env: &mut EnvReader, default: u16) -> u16 {
    env.with_default("PORT", default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_variable_is_named() {
        let mut env = EnvReader::from_map([("PORT", "eighty"), ("LOG_FORMAT", "xml")]);
        let _ = CommonConfig::read(&mut env);
        let _ = read_port(&mut env, 8080);
        let _: Option<String> = env.required("SOMETHING_REQUIRED");
        let error = env.finish().unwrap_err();
        assert!(error.names("PORT"));
        assert!(error.names("LOG_FORMAT"));
        assert!(error.names("SOMETHING_REQUIRED"));
        assert!(!error.names("NATS_URL"));
        let message = error.to_string();
        assert!(message.contains("PORT: `eighty` is invalid"), "{message}");
    }

    #[test]
    fn secret_values_are_not_echoed() {
        let mut env = EnvReader::from_map([
            ("DATABASE_MAX_CONNECTIONS", "x"),
            ("API_KEY_COUNT", "hunter2"),
        ]);
        let _: Option<u32> = env.optional("API_KEY_COUNT");
        let message = env.finish().unwrap_err().to_string();
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("<redacted>"), "{message}");
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        let mut env = EnvReader::from_map([("NATS_URL", "  ")]);
        let common = CommonConfig::read(&mut env);
        env.finish().unwrap();
        assert_eq!(common.nats_url, DEFAULT_NATS_URL);
        assert_eq!(common.log_format, LogFormat::Pretty);
        assert_eq!(common.streams, StreamSettings::default());
        assert!(common.nats_auth.is_none());
    }

    #[test]
    fn stream_settings_are_read_and_checked() {
        let mut env = EnvReader::from_map([
            ("NATS_STREAM_REPLICAS", "3"),
            ("NATS_STREAM_STORAGE", "Memory"),
        ]);
        let common = CommonConfig::read(&mut env);
        env.finish().unwrap();
        assert_eq!(
            common.streams,
            StreamSettings {
                replicas: 3,
                storage: StreamStorage::Memory
            }
        );

        for (replicas, expected) in [
            ("0", "`0` is out of range: 1 to 5"),
            ("7", "`7` is out of range: 1 to 5"),
            ("three", "`three` is invalid"),
        ] {
            let mut env = EnvReader::from_map([("NATS_STREAM_REPLICAS", replicas)]);
            let _ = CommonConfig::read(&mut env);
            let message = env.finish().unwrap_err().to_string();
            assert!(
                message.contains(&format!("NATS_STREAM_REPLICAS: {expected}")),
                "{message}"
            );
        }
        let mut env = EnvReader::from_map([("NATS_STREAM_STORAGE", "disk")]);
        let _ = CommonConfig::read(&mut env);
        let error = env.finish().unwrap_err();
        assert!(error.names("NATS_STREAM_STORAGE"), "{error}");
    }

    #[test]
    fn nats_user_and_password_come_together_and_the_password_is_never_shown() {
        let mut env =
            EnvReader::from_map([("NATS_USER", "journal_api"), ("NATS_PASSWORD", "hunter2")]);
        let common = CommonConfig::read(&mut env);
        env.finish().unwrap();
        let auth = common.nats_auth.clone().unwrap();
        assert_eq!(auth.user, "journal_api");
        assert!(!format!("{common:?}").contains("hunter2"));

        let mut env = EnvReader::from_map([("NATS_USER", "journal_api")]);
        let _ = CommonConfig::read(&mut env);
        let error = env.finish().unwrap_err();
        assert!(error.names("NATS_PASSWORD"), "{error}");
        let mut env = EnvReader::from_map([("NATS_PASSWORD", "hunter2")]);
        let _ = CommonConfig::read(&mut env);
        let error = env.finish().unwrap_err();
        assert!(error.names("NATS_USER"), "{error}");
        assert!(!error.to_string().contains("hunter2"));
    }
}
