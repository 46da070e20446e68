//! The client and the operations on the bucket: upload, download, delete, presign, readiness.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use secrecy::ExposeSecret;

use crate::health::ReadinessCheck;

/// Development defaults: what `cargo xtask dev`/`test` start `s3s-fs` with and what the
use super::{MAX_PRESIGN_EXPIRY, S3Config, StorageError, request_error};

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
