//! Attachments end to end, on real Postgres, NATS and an S3-protocol server (s3s-fs, which
//! checks presigned signatures): `cdn.createUploadUrl` over the api's RPC → a plain HTTP PUT
//! to the presigned URL, exactly as an app sends it → `cdn.completeUpload` → the worker's
//! verification and thumbnail → `attachment.verified` → `cdn.getDownloadUrl`, downloaded with
//! a plain HTTP GET. Also: what the signature refuses, what `createUploadUrl` refuses,
//! impostor images, who may download, expired URLs, abandoned uploads, entry deletion and the
//! retention purge.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cleanup;
#[path = "../common/mod.rs"]
mod common;
mod downloads;
mod fixtures;
mod upload_checks;
