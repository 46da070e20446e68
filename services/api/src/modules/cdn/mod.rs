//! Attachments through presigned S3 uploads (the original's `modules/cdn`), verified by the
//! worker: `cdn.createUploadUrl`, `cdn.completeUpload`, `cdn.get`, `cdn.getDownloadUrl`, the
//! `attachment.verified` event, the `clean-up-abandoned-uploads` job and the purge of
//! attachments past retention. See docs/cdn.md.
//!
//! 1. `createUploadUrl {fileName, contentType, sizeBytes, journalEntryId?}` checks the type
//!    against the allow-list and the size against `CDN_MAX_UPLOAD_BYTES`, records the row
//!    (`pending`) with its changeset, and answers a PUT URL (valid `CDN_UPLOAD_URL_TTL_SECONDS`)
//!    whose signature covers `Content-Type` and `Content-Length`: S3 refuses any other type or
//!    length. The object key is `attachments/<ownerUserId>/<attachmentId>`; nothing the client
//!    sends becomes part of it (the sanitized file name is metadata for downloads only).
//! 2. The client PUTs the file, then calls `completeUpload {attachmentId}`: the row becomes
//!    `verifying` and the worker gets the task `media.verify_attachment` (one transaction).
//!    Calling it again answers the row as it is (no second task).
//! 3. The worker's `attachment.verified` marks it `ready` (with a thumbnail for images) or
//!    `rejected` (its object already deleted by the worker).
//! 4. `getDownloadUrl {attachmentId, variant?}` presigns a GET of a `ready` attachment for its
//!    owner and, for an attachment of a team entry, every active member of the team.
//!
//! Attachments are a synced table (`attachments`, in the entry's scope, else the owner's).
//! Deleting an entry soft-deletes its attachments in the same transaction; restoring it
//! restores the ones deleted with it. Uploads left `pending` (or `verifying`) for
//! `CDN_ABANDONED_UPLOAD_SECONDS` are expired by the cron job and their objects deleted;
//! the daily retention purge deletes the objects and rows of attachments soft-deleted longer
//! than `SOFT_DELETE_RETENTION_DAYS`.

pub mod handlers;
pub mod procedures;
pub mod store;
#[cfg(test)]
mod tests;
pub mod types;

// What the start-up wires to the bus.
pub use self::handlers::on_attachment_verified;

use std::time::{SystemTime, UNIX_EPOCH};

use self::procedures::complete_upload;
use self::procedures::create_upload_url;
use self::procedures::get;
use self::procedures::get_download_url;
use crate::contract::errors;
use crate::http::error::ApiError;
use crate::http::rpc::RpcRouter;

pub fn routes() -> RpcRouter {
    RpcRouter::new()
        .mutation("cdn.createUploadUrl", create_upload_url)
        .errors(&[
            errors::ENTRY_DELETED,
            errors::TOO_MANY_PENDING_UPLOADS,
            errors::STORAGE_UNAVAILABLE,
        ])
        .mutation("cdn.completeUpload", complete_upload)
        .errors(&[
            errors::UPLOAD_EXPIRED,
            errors::UPLOAD_NOT_FOUND,
            errors::ATTACHMENT_DELETED,
            errors::STORAGE_UNAVAILABLE,
        ])
        .query("cdn.get", get)
        .query("cdn.getDownloadUrl", get_download_url)
        .errors(&[
            errors::ATTACHMENT_DELETED,
            errors::ATTACHMENT_NOT_READY,
            errors::NO_THUMBNAIL,
            errors::STORAGE_UNAVAILABLE,
        ])
}
