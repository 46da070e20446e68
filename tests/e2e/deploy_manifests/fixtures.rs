//! What every manifest test uses: the services and their variables, the repository's files
//! and YAML parsing.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// The five binaries and the ports they listen on.
pub(crate) const APP_SERVICES: [(&str, u16); 5] = [
    ("api", 8080),
    ("sync-streamer", 8081),
    ("worker", 8082),
    ("cron", 8083),
    ("notifier", 8084),
];

/// Variables every service reads.
pub(crate) const COMMON_VARS: [&str; 8] = [
    "DATABASE_URL",
    "NATS_URL",
    "LOG_FORMAT",
    "RUST_LOG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "SHUTDOWN_GRACE_SECONDS",
    "DATABASE_MAX_CONNECTIONS",
    "HOST",
];
/// Variables only the api reads.
pub(crate) const API_VARS: [&str; 10] = [
    "S3_ENDPOINT",
    "S3_BUCKET",
    "S3_REGION",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "GOOGLE_CLIENT_ID",
    "GOOGLE_CLIENT_SECRET",
    "SYNC_TOKEN_SECRET",
    "CRON_SECRET",
    "AUTH_DEV_LOGIN",
];
/// Variables only the notifier reads.
pub(crate) const NOTIFIER_VARS: [&str; 2] = ["SUPRSEND_BASE_URL", "SUPRSEND_API_KEY"];

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub(crate) fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path)
        .map_err(|error| format!("reading {}: {error}", path.display()))
        .unwrap()
}

/// Parse YAML into `T`, resolving aliases and `<<` merge keys first, as compose does.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> T {
    let mut value: Value = serde_yaml::from_str(text)
        .map_err(|error| format!("{what} is not valid YAML: {error}"))
        .unwrap();
    value
        .apply_merge()
        .map_err(|error| format!("{what}: bad merge key: {error}"))
        .unwrap();
    serde_yaml::from_value(value)
        .map_err(|error| format!("{what} does not have the expected shape: {error}"))
        .unwrap()
}

/// A YAML scalar as compose and Kubernetes read it (`8080`, `"8080"` and `true` are all text).
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}
