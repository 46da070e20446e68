//! Attachment verification: task `media.verify_attachment` → the uploaded object checked
//! against what `cdn.createUploadUrl` declared, a thumbnail for images, and the verdict as
//! the event `attachment.verified` (docs/cdn.md).
//!
//! 1. A redelivery of a task whose verdict is recorded does nothing.
//! 2. The object must exist with the declared size and content type (S3 already refused any
//!    other through the presigned URL's signature; this is the second lock).
//! 3. Images must start with their type's magic bytes (PNG, JPEG, GIF, WebP) and decode
//!    (bounded: at most [`MAX_IMAGE_EDGE`] pixels a side); PDFs must start with `%PDF-`.
//!    Audio is checked for existence, size and type only.
//! 4. An image gets a PNG thumbnail at most [`THUMBNAIL_EDGE`] pixels a side,
//!    `thumbnails/<attachmentId>.png` (a fixed key: a retry overwrites it).
//! 5. The bytes checked are written to [`verified_key`], the only key downloads serve, and
//!    the upload key is deleted: the presigned PUT stays valid after verification, so what
//!    sits at the upload key later was never checked. A rejected object is deleted.
//! 6. Every file is read whole into memory (audio too, for step 5): at most one per core at
//!    once (`WorkerState::file_checks`).
//! 7. One transaction records the message id and the verdict (outbox). A crash before it
//!    leaves nothing a redelivery does not redo.

use domain::ids::{AttachmentId, UserId};
use std::io::Cursor;

use bus::{HandlerError, Meta, Msg, State};
use image::{ImageFormat, ImageReader, Limits};
use messages::journal::v1::{AttachmentVerified, VerifyAttachment};

use crate::WorkerState;

/// A thumbnail's longest side, in pixels.
pub const THUMBNAIL_EDGE: u32 = 256;
/// Images larger than this on a side are refused as unreadable (decoding bombs).
pub const MAX_IMAGE_EDGE: u32 = 16_384;
/// Memory one decode may allocate.
const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;

/// The thumbnail key of an attachment.
pub fn thumbnail_key(attachment_id: AttachmentId) -> String {
    format!("thumbnails/{attachment_id}.png")
}

/// The image format the content type declares (the ones we thumbnail).
fn image_format(content_type: &str) -> Option<ImageFormat> {
    match content_type {
        "image/png" => Some(ImageFormat::Png),
        "image/jpeg" => Some(ImageFormat::Jpeg),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// The image format of `bytes` by its magic bytes.
pub fn sniff_image(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(ImageFormat::Gif)
    } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some(ImageFormat::WebP)
    } else {
        None
    }
}

/// Why an upload is refused: a stable code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
}

fn reject(code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        message: message.into(),
    }
}

/// A thumbnail and the original's size.
#[derive(Debug)]
pub struct Thumbnail {
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Check an image's bytes against its declared format and make its thumbnail (CPU-bound:
/// call it on a blocking thread).
pub fn check_image(declared: ImageFormat, bytes: &[u8]) -> Result<Thumbnail, Rejection> {
    match sniff_image(bytes) {
        Some(found) if found == declared => {}
        Some(found) => {
            return Err(reject(
                "CONTENT_MISMATCH",
                format!(
                    "the file is {}, not the declared {}",
                    found.to_mime_type(),
                    declared.to_mime_type()
                ),
            ));
        }
        None => {
            return Err(reject(
                "CONTENT_MISMATCH",
                format!("the file is not a {} image", declared.to_mime_type()),
            ));
        }
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), declared);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_EDGE);
    limits.max_image_height = Some(MAX_IMAGE_EDGE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let image = reader.decode().map_err(|error| {
        reject(
            "IMAGE_UNREADABLE",
            format!("the image cannot be decoded: {error}"),
        )
    })?;
    let thumbnail = image.thumbnail(THUMBNAIL_EDGE, THUMBNAIL_EDGE);
    let mut png = Vec::new();
    thumbnail
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|error| {
            reject(
                "IMAGE_UNREADABLE",
                format!("no thumbnail could be made: {error}"),
            )
        })?;
    Ok(Thumbnail {
        png,
        width: image.width(),
        height: image.height(),
    })
}

/// An accepted upload: the bytes that were checked — the only bytes ever served, copied to
/// [`verified_key`] — and, for images, a thumbnail.
struct Accepted {
    bytes: Vec<u8>,
    thumbnail: Option<Thumbnail>,
}

/// What the checks found.
type Verdict = Result<Accepted, Rejection>;

/// `verified/<owner>/<attachment>`: where the verified bytes are served from. No presigned
/// URL names this prefix, so nothing a client sends can replace them (issue 15: the upload
/// URL stays valid after verification, and a second PUT to it used to be served).
pub fn verified_key(owner_user_id: UserId, attachment_id: AttachmentId) -> String {
    format!("verified/{owner_user_id}/{attachment_id}")
}

/// Check the object at `source` (the upload, or on a redelivery the verified copy) against
/// what the task declares.
async fn verify(
    state: &WorkerState,
    task: &VerifyAttachment,
    source: &str,
) -> Result<Verdict, HandlerError> {
    let expected_size = u64::try_from(task.size_bytes).unwrap_or_default();
    let Some(head) = state.storage.head(source).await? else {
        return Ok(Err(reject(
            "OBJECT_MISSING",
            "nothing was uploaded (or it was removed)",
        )));
    };
    if head.size != expected_size {
        return Ok(Err(reject(
            "SIZE_MISMATCH",
            format!(
                "the upload has {} bytes, {} were declared",
                head.size, expected_size
            ),
        )));
    }
    // Some servers keep no content type; the presigned signature has enforced it anyway.
    if let Some(stored) = &head.content_type {
        let stored = stored
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if stored != task.content_type {
            return Ok(Err(reject(
                "CONTENT_TYPE_MISMATCH",
                format!("the upload is {stored}, {} was declared", task.content_type),
            )));
        }
    }
    // Every upload is read whole, audio too: the bytes checked are the bytes copied to the
    // verified key, so a PUT racing the check cannot slip in between.
    let _file_check = state
        .file_checks
        .acquire()
        .await
        .map_err(|error| HandlerError::retry(format!("file checks stopped: {error}")))?;
    let Some(bytes) = state.storage.get_bytes(source, expected_size).await? else {
        return Ok(Err(reject(
            "OBJECT_MISSING",
            "the upload disappeared while it was checked",
        )));
    };
    if bytes.len() as u64 != expected_size {
        return Ok(Err(reject(
            "SIZE_MISMATCH",
            format!(
                "the upload has {} bytes, {} were declared",
                bytes.len(),
                expected_size
            ),
        )));
    }
    let Some(declared) = image_format(&task.content_type) else {
        if task.content_type == "application/pdf" && !bytes.starts_with(b"%PDF-") {
            return Ok(Err(reject(
                "CONTENT_MISMATCH",
                "the file is not a PDF document",
            )));
        }
        return Ok(Ok(Accepted {
            bytes,
            thumbnail: None,
        }));
    };
    let checked = tokio::task::spawn_blocking(move || {
        check_image(declared, &bytes).map(|thumbnail| Accepted {
            bytes,
            thumbnail: Some(thumbnail),
        })
    })
    .await
    .map_err(|error| HandlerError::retry(format!("the image check stopped: {error}")))?;
    Ok(checked)
}

pub async fn verify_attachment(
    State(state): State<WorkerState>,
    Msg(task): Msg<VerifyAttachment>,
    meta: Meta,
) -> Result<(), HandlerError> {
    let attachment_id = task
        .parse_attachment_id()
        .map_err(HandlerError::permanent)?;
    let owner_user_id = task
        .parse_owner_user_id()
        .map_err(HandlerError::permanent)?;
    if bus::idempotency::already_processed(&state.db, &meta.handler, &meta.message_id).await? {
        return Ok(());
    }

    let mut verdict = AttachmentVerified {
        attachment_id: task.attachment_id.clone(),
        owner_user_id: task.owner_user_id.clone(),
        verified_at_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    };
    let verified = verified_key(owner_user_id, attachment_id);
    // A redelivery after an earlier attempt copied the upload (and deleted it) re-checks the
    // copy: only this handler writes there.
    let source = if state.storage.head(&verified).await?.is_some() {
        verified.clone()
    } else {
        task.object_key.clone()
    };
    match verify(&state, &task, &source).await? {
        Ok(Accepted { bytes, thumbnail }) => {
            verdict.accepted = true;
            if let Some(thumbnail) = thumbnail {
                let key = thumbnail_key(attachment_id);
                state
                    .storage
                    .put_bytes(&key, thumbnail.png, "image/png")
                    .await?;
                verdict.thumbnail_key = Some(key);
                verdict.width = i32::try_from(thumbnail.width).ok();
                verdict.height = i32::try_from(thumbnail.height).ok();
            }
            // A fixed key: a retry overwrites it with the same bytes.
            state
                .storage
                .put_bytes(&verified, bytes, &task.content_type)
                .await?;
            verdict.verified_key = Some(verified);
            // Served from the verified key from now on; whatever reaches the upload key later
            // is never served (and is deleted with the attachment).
            state.storage.delete(&task.object_key).await?;
        }
        Err(rejection) => {
            tracing::info!(%attachment_id, code = rejection.code, reason = %rejection.message, "attachment rejected");
            state.storage.delete(&task.object_key).await?;
            state.storage.delete(&verified).await?;
            verdict.accepted = false;
            verdict.rejection_code = rejection.code.to_owned();
            verdict.rejection_message = rejection.message;
        }
    }

    let mut tx = state.db.begin().await?;
    if !bus::idempotency::first_time(&mut tx, &meta.handler, &meta.message_id).await? {
        return Ok(());
    }
    bus::outbox::emit(&mut tx, &verdict).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbImage::from_pixel(width, height, image::Rgb([200, 30, 30]));
        let mut bytes = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        bytes
    }

    #[test]
    fn magic_bytes_name_the_format() {
        assert_eq!(sniff_image(&png(2, 2)), Some(ImageFormat::Png));
        assert_eq!(
            sniff_image(b"\xFF\xD8\xFF\xE0rest"),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(sniff_image(b"GIF89a...."), Some(ImageFormat::Gif));
        assert_eq!(
            sniff_image(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(ImageFormat::WebP)
        );
        assert_eq!(sniff_image(b"%PDF-1.7"), None);
        assert_eq!(sniff_image(b""), None);
    }

    #[test]
    fn images_get_a_bounded_thumbnail_and_impostors_are_refused() {
        let thumbnail = check_image(ImageFormat::Png, &png(1024, 512)).unwrap();
        assert_eq!((thumbnail.width, thumbnail.height), (1024, 512));
        let small = image::load_from_memory(&thumbnail.png).unwrap();
        assert_eq!((small.width(), small.height()), (256, 128));

        let text = check_image(ImageFormat::Png, b"hello, not an image").unwrap_err();
        assert_eq!(text.code, "CONTENT_MISMATCH");
        let other = check_image(ImageFormat::Jpeg, &png(4, 4)).unwrap_err();
        assert_eq!(other.code, "CONTENT_MISMATCH");
        let mut truncated = png(64, 64);
        truncated.truncate(40);
        assert_eq!(
            check_image(ImageFormat::Png, &truncated).unwrap_err().code,
            "IMAGE_UNREADABLE"
        );
    }
}
