//! Object storage over the S3 protocol (AWS S3 in production, MinIO in `docker compose`, a
//! local `s3s-fs` in tests and `cargo xtask dev`): configuration, the client, and the few
//! operations the services need (ensure the bucket, upload, download, delete, presign a
//! download or an upload of one type and length, check readiness). Path-style addressing
//! (`<endpoint>/<bucket>/<key>`), so any S3-compatible server works without DNS tricks.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use secrecy::{ExposeSecret, SecretString};

use crate::config::EnvReader;
use crate::health::ReadinessCheck;

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

/// A presigned download.
#[derive(Debug, Clone)]
pub struct PresignedUrl {
    pub url: String,
    pub expires_at: SystemTime,
}

/// A presigned upload: PUT the body to `url` with exactly these `headers`.
#[derive(Debug, Clone)]
pub struct PresignedUpload {
    pub url: String,
    /// Lowercase names, sorted (`content-length`, `content-type`).
    pub headers: Vec<(String, String)>,
    pub expires_at: SystemTime,
}

/// What `HeadObject` says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    pub content_type: Option<String>,
}

/// The configured bucket, through one client (and a second one whose only job is to presign
/// with the public endpoint).
#[derive(Clone)]
pub struct ObjectStore {
    client: Client,
    presigner: Client,
    bucket: String,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl ObjectStore {
    /// Build the clients (no network traffic yet).
    pub fn new(config: &S3Config) -> Self {
        Self {
            client: client(config, &config.endpoint),
            presigner: client(config, &config.public_endpoint),
            bucket: config.bucket.clone(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The underlying client, for operations this module does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Check that the bucket exists; with `create_if_missing` (development), create it.
    pub async fn ensure_bucket(&self, create_if_missing: bool) -> Result<(), StorageError> {
        if self.bucket_exists().await? {
            return Ok(());
        }
        if !create_if_missing {
            return Err(StorageError::NoSuchBucket(self.bucket.clone()));
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket, "created the bucket");
                Ok(())
            }
            // Another replica created it first.
            Err(_) if self.bucket_exists().await? => Ok(()),
            Err(error) => Err(request_error("creating the bucket", error)),
        }
    }

    async fn bucket_exists(&self) -> Result<bool, StorageError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(true),
            Err(error) => match error.as_service_error() {
                Some(service_error) if service_error.is_not_found() => Ok(false),
                _ => Err(request_error("checking the bucket", error)),
            },
        }
    }

    /// Upload the file at `path` as `key`; returns its size in bytes.
    pub async fn put_file(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
        content_disposition: Option<&str>,
    ) -> Result<u64, StorageError> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|error| StorageError::File {
                path: path.display().to_string(),
                message: error.to_string(),
            })?
            .len();
        let body = ByteStream::from_path(path)
            .await
            .map_err(|error| StorageError::File {
                path: path.display().to_string(),
                message: error.to_string(),
            })?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .set_content_disposition(content_disposition.map(str::to_owned))
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .body(body)
            .send()
            .await
            .map_err(|error| request_error("uploading", error))?;
        Ok(size)
    }

    /// The size of `key`, or `None` when it does not exist.
    pub async fn object_size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        Ok(self.head(key).await?.map(|head| head.size))
    }

    /// A GET URL for `key` valid for `expires_in` (at most seven days), signed for the public
    /// endpoint. Computed locally: no request is made.
    pub async fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<PresignedUrl, StorageError> {
        self.presign_download(key, expires_in, None).await
    }

    /// Like [`presign_get`](Self::presign_get), with the response's `Content-Disposition`
    /// set (e.g. `attachment; filename="photo.png"`).
    pub async fn presign_get_as(
        &self,
        key: &str,
        expires_in: Duration,
        content_disposition: &str,
    ) -> Result<PresignedUrl, StorageError> {
        self.presign_download(key, expires_in, Some(content_disposition))
            .await
    }

    async fn presign_download(
        &self,
        key: &str,
        expires_in: Duration,
        content_disposition: Option<&str>,
    ) -> Result<PresignedUrl, StorageError> {
        let (presigning, expires_at) = presigning(expires_in)?;
        let request = self
            .presigner
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_response_content_disposition(content_disposition.map(str::to_owned))
            .presigned(presigning)
            .await
            .map_err(|error| request_error("presigning", error))?;
        Ok(PresignedUrl {
            url: request.uri().to_owned(),
            expires_at,
        })
    }

    /// A PUT URL for `key` valid for `expires_in` (at most seven days), signed for the public
    /// endpoint, that only accepts a body of exactly `content_length` bytes sent with
    /// `Content-Type: content_type`: both headers are part of the signature, so another type
    /// or length fails it. The client must send [`PresignedUpload::headers`] with the body.
    /// Computed locally: no request is made.
    pub async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: u64,
        expires_in: Duration,
    ) -> Result<PresignedUpload, StorageError> {
        let (presigning, expires_at) = presigning(expires_in)?;
        let request = self
            .presigner
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(i64::try_from(content_length).unwrap_or(i64::MAX))
            .presigned(presigning)
            .await
            .map_err(|error| request_error("presigning", error))?;
        let mut headers: Vec<(String, String)> = request
            .headers()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
            .collect();
        headers.sort();
        Ok(PresignedUpload {
            url: request.uri().to_owned(),
            headers,
            expires_at,
        })
    }

    /// The size and content type of `key`, or `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectHead>, StorageError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(ObjectHead {
                size: head
                    .content_length()
                    .and_then(|length| u64::try_from(length).ok())
                    .unwrap_or(0),
                content_type: head.content_type().map(str::to_owned),
            })),
            Err(error) => match error.as_service_error() {
                Some(service_error) if service_error.is_not_found() => Ok(None),
                _ => Err(request_error("checking an object", error)),
            },
        }
    }

    /// The whole of `key`, refusing (without reading on) an object larger than `max_bytes`;
    /// `None` when it does not exist.
    pub async fn get_bytes(
        &self,
        key: &str,
        max_bytes: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let object = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(object) => object,
            Err(error) => {
                return match error.as_service_error() {
                    Some(service_error) if service_error.is_no_such_key() => Ok(None),
                    _ => Err(request_error("downloading", error)),
                };
            }
        };
        let declared = object
            .content_length()
            .and_then(|length| u64::try_from(length).ok())
            .unwrap_or(0);
        if declared > max_bytes {
            return Err(StorageError::TooLarge {
                key: key.to_owned(),
                limit: max_bytes,
            });
        }
        let mut body = object.body;
        let mut bytes = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|error| request_error("downloading", error))?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > max_bytes {
                return Err(StorageError::TooLarge {
                    key: key.to_owned(),
                    limit: max_bytes,
                });
            }
        }
        Ok(Some(bytes))
    }

    /// Upload `bytes` as `key`.
    pub async fn put_bytes(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<(), StorageError> {
        let length = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(length)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|error| request_error("uploading", error))?;
        Ok(())
    }

    /// Delete `key`; deleting an object that does not exist succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| request_error("deleting", error))?;
        Ok(())
    }

    /// Readiness: the bucket answers a `HeadBucket`.
    pub fn readiness_check(&self) -> BucketReachable {
        BucketReachable {
            store: self.clone(),
        }
    }
}

/// Presigning settings starting now for `expires_in` (capped at seven days), and when the
/// signature expires.
fn presigning(expires_in: Duration) -> Result<(PresigningConfig, SystemTime), StorageError> {
    let expires_in = expires_in.min(MAX_PRESIGN_EXPIRY);
    let start = SystemTime::now();
    let config = PresigningConfig::builder()
        .start_time(start)
        .expires_in(expires_in)
        .build()
        .map_err(|error| request_error("presigning", error))?;
    Ok((config, start + expires_in))
}

fn client(config: &S3Config, endpoint: &str) -> Client {
    let credentials = Credentials::new(
        &config.access_key_id,
        config.secret_access_key.expose_secret(),
        None,
        None,
        "environment",
    );
    let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(300))
        .build();
    let s3_config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(config.region.clone()))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .force_path_style(true)
        .timeout_config(timeouts)
        // Only what the protocol requires: S3-compatible servers differ in which of the
        // newer flexible checksums they accept.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    Client::from_conf(s3_config)
}

/// Readiness check: `HeadBucket` answers within 2 s.
pub struct BucketReachable {
    store: ObjectStore,
}

impl ReadinessCheck for BucketReachable {
    fn name(&self) -> &str {
        "object_storage"
    }

    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            match tokio::time::timeout(Duration::from_secs(2), self.store.bucket_exists()).await {
                Ok(Ok(true)) => Ok(()),
                Ok(Ok(false)) => Err(format!("bucket `{}` does not exist", self.store.bucket)),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("no answer within 2000 ms".to_owned()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        assert!(check_bucket_name("journal").is_ok());
        assert!(check_bucket_name("t-0123abcd.exports").is_ok());
        assert!(check_bucket_name("ab").is_err());
        assert!(check_bucket_name("Journal").is_err());
        assert!(check_bucket_name("-journal").is_err());
        assert!(check_bucket_name("journal_exports").is_err());
    }

    #[test]
    fn production_needs_credentials_and_secrets_stay_out_of_errors() {
        let mut env = EnvReader::from_map([("S3_ENDPOINT", "minio:9000"), ("S3_BUCKET", "B")]);
        let _ = S3Config::read(&mut env, true);
        let error = env.finish().unwrap_err();
        assert!(error.names("S3_ENDPOINT"));
        assert!(error.names("S3_BUCKET"));
        assert!(error.names("S3_ACCESS_KEY_ID"));
        assert!(error.names("S3_SECRET_ACCESS_KEY"));

        let mut env = EnvReader::from_map([("S3_SECRET_ACCESS_KEY", "hunter2")]);
        let config = S3Config::read(&mut env, false);
        env.finish().unwrap();
        assert_eq!(config.public_endpoint, DEFAULT_ENDPOINT);
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
