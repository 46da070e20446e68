//! Object storage failing under the worker, on the real S3-protocol server (s3s-fs): while S3
//! fails, an export or an attachment check records nothing and tells no one; the task is
//! retried with backoff (or, past its retry budget, dead-lettered with the storage error);
//! once S3 works again it completes, exactly once.
//!
//! The failures are real, no stand-in answers for S3:
//! - the server refusing a write: s3s-fs keeps objects as files, so while an object sits at
//!   `exports/<userId>` it cannot store `exports/<userId>/<exportId>.json` and answers the
//!   upload `500 InternalError` (MinIO refuses it too, `XMinioParentIsObject`);
//! - the test's bucket deleted on the server, which then answers `NoSuchBucket` and 404s;
//! - the worker's S3 endpoint behind a TCP gate the test closes (connection refused,
//!   established connections cut) and reopens, so an upload survives the outage and the
//!   api, which talks to the server directly, can still complete it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attachment_checks;
#[path = "../common/mod.rs"]
mod common;
mod exports;
mod fixtures;
