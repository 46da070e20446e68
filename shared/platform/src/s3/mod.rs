//! Object storage over the S3 protocol (AWS S3 in production, MinIO in `docker compose`, a
//! local `s3s-fs` in tests and `cargo xtask dev`): configuration, the client, and the few
//! operations the services need (ensure the bucket, upload, download, delete, presign a
//! download or an upload of one type and length, check readiness). Path-style addressing
//! (`<endpoint>/<bucket>/<key>`), so any S3-compatible server works without DNS tricks.

mod store;

pub use store::{BucketReachable, ObjectHead, ObjectStore, PresignedUpload, PresignedUrl};

use std::time::Duration;

use aws_sdk_s3::error::DisplayErrorContext;
use secrecy::SecretString;

use crate::config::EnvReader;

/// Development defaults: what `cargo xtask dev`/`test` start `s3s-fs` with and what the
/// compose file gives MinIO.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:9000";
pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_ACCESS_KEY_ID: &str = "journal";
pub const DEFAULT_SECRET_ACCESS_KEY: &str = "journal-dev-secret";
pub const DEFAULT_BUCKET: &str = "journal";

/// SigV4 presigned URLs are valid for at most seven days.
pub const MAX_PRESIGN_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// `S3_*` variables.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `S3_ENDPOINT`: the server the service talks to (default `http://127.0.0.1:9000`).
    pub endpoint: String,
    /// `S3_PUBLIC_ENDPOINT`: the same server as clients reach it, for presigned URLs (default
    /// `S3_ENDPOINT`; differs e.g. in compose, where services use `http://minio:9000`).
    pub public_endpoint: String,
    /// `S3_REGION` (default `us-east-1`).
    pub region: String,
    /// `S3_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `S3_SECRET_ACCESS_KEY` (never logged).
    pub secret_access_key: SecretString,
    /// `S3_BUCKET` (default `journal`).
    pub bucket: String,
}

impl S3Config {
    /// Read the variables. In production the credentials have no default and must be set.
    pub fn read(env: &mut EnvReader, production: bool) -> Self {
        let endpoint: String = env.with_default("S3_ENDPOINT", DEFAULT_ENDPOINT.to_owned());
        check_endpoint(env, "S3_ENDPOINT", &endpoint);
        let public_endpoint: String = env.with_default("S3_PUBLIC_ENDPOINT", endpoint.clone());
        check_endpoint(env, "S3_PUBLIC_ENDPOINT", &public_endpoint);
        let (access_key_id, secret_access_key) = if production {
            (
                env.required::<String>("S3_ACCESS_KEY_ID")
                    .unwrap_or_default(),
                env.required_secret("S3_SECRET_ACCESS_KEY")
                    .unwrap_or_else(|| SecretString::from(String::new())),
            )
        } else {
            (
                env.with_default("S3_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID.to_owned()),
                env.secret_with_default("S3_SECRET_ACCESS_KEY", DEFAULT_SECRET_ACCESS_KEY),
            )
        };
        let bucket: String = env.with_default("S3_BUCKET", DEFAULT_BUCKET.to_owned());
        if let Err(problem) = check_bucket_name(&bucket) {
            env.reject("S3_BUCKET", format!("`{bucket}` {problem}"));
        }
        Self {
            endpoint,
            public_endpoint,
            region: env.with_default("S3_REGION", DEFAULT_REGION.to_owned()),
            access_key_id,
            secret_access_key,
            bucket,
        }
    }

    /// The development defaults with another endpoint and bucket (tests).
    pub fn for_tests(endpoint: &str, bucket: &str) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            public_endpoint: endpoint.to_owned(),
            region: DEFAULT_REGION.to_owned(),
            access_key_id: DEFAULT_ACCESS_KEY_ID.to_owned(),
            secret_access_key: SecretString::from(DEFAULT_SECRET_ACCESS_KEY.to_owned()),
            bucket: bucket.to_owned(),
        }
    }
}

fn check_endpoint(env: &mut EnvReader, name: &str, endpoint: &str) {
    let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
    if !scheme_ok || endpoint.len() <= "https://".len() {
        env.reject(
            name,
            format!("`{endpoint}` is not an http:// or https:// URL"),
        );
    }
}

/// S3's bucket naming rules (the subset that matters for path-style addressing).
pub fn check_bucket_name(bucket: &str) -> Result<(), &'static str> {
    let allowed = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !(3..=63).contains(&bucket.len()) {
        Err("must be 3 to 63 characters")
    } else if !allowed {
        Err("may contain only lowercase letters, digits, `-` and `.`")
    } else if !bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        Err("must start and end with a letter or digit")
    } else {
        Ok(())
    }
}

/// What went wrong talking to object storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object storage {operation}: {message}")]
    Request {
        operation: &'static str,
        message: String,
    },
    #[error("object storage: bucket `{0}` does not exist")]
    NoSuchBucket(String),
    #[error("object storage: reading {path}: {message}")]
    File { path: String, message: String },
    #[error("object storage: `{key}` is larger than {limit} bytes")]
    TooLarge { key: String, limit: u64 },
}

fn request_error(operation: &'static str, error: impl std::error::Error) -> StorageError {
    StorageError::Request {
        operation,
        message: DisplayErrorContext(error).to_string(),
    }
}

#[cfg(test)]
mod tests;
