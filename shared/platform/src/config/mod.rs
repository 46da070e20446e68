//! Configuration from environment variables.
//!
//! Every service reads its variables through an [`EnvReader`], which collects *all* missing or
//! malformed variables and reports them together, each by name, so a misconfigured deployment
//! is fixed in one pass rather than one restart per variable.

mod common;

pub use common::{
    CommonConfig, DEFAULT_DATABASE_URL, DEFAULT_NATS_URL, DEFAULT_RELAY_WAKE_DELAY, LogFormat,
    MAX_STREAM_REPLICAS, NatsAuth, OutboxKind, StreamSettings, StreamStorage,
};

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

/// `ENVIRONMENT`: whether development conveniences (creating a missing bucket, the api's dev
/// login) are allowed.
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

/// A service's `Config`, read the same way by every service: the shared variables
/// ([`CommonConfig`]), `PORT`, then the service's own. Every bad variable is reported at once
/// ([`ConfigError`]), so a deployment is fixed in one pass.
pub trait FromEnvironment: Sized {
    /// The port when `PORT` is unset.
    const DEFAULT_PORT: u16;

    /// The service's own variables, read after the shared ones and `PORT`; a bad one is
    /// recorded with [`EnvReader::reject`] (or by the reader itself) and reported by
    /// [`read`](Self::read), never panics or returns early.
    fn read_own(common: CommonConfig, port: u16, env: &mut EnvReader) -> Self;

    /// From the process's environment (what `main.rs` does).
    fn from_env() -> Result<Self, ConfigError> {
        Self::read(EnvReader::from_process())
    }

    /// From `env` (tests pass a map, [`EnvReader::from_map`]).
    fn read(mut env: EnvReader) -> Result<Self, ConfigError> {
        let common = CommonConfig::read(&mut env);
        let port = read_port(&mut env, Self::DEFAULT_PORT);
        let config = Self::read_own(common, port, &mut env);
        env.finish()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests;
