use domain::ids::{AttachmentId, UserId};
use uuid::Uuid;

use super::types::{content_disposition, object_key, sanitize_file_name};

#[test]
fn file_names_lose_paths_and_control_characters() {
    assert_eq!(sanitize_file_name("photo.png"), "photo.png");
    assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
    assert_eq!(
        sanitize_file_name("C:\\Users\\ada\\report.pdf"),
        "report.pdf"
    );
    assert_eq!(sanitize_file_name("a\u{0}b\"c\n.mp3"), "abc.mp3");
    assert_eq!(sanitize_file_name("  .hidden "), "hidden");
    assert_eq!(sanitize_file_name("dir/"), "");
    assert_eq!(sanitize_file_name(&"é".repeat(300)).chars().count(), 255);
}

#[test]
fn keys_hold_ids_only_and_dispositions_are_quoted() {
    let user = UserId::from_uuid(Uuid::nil());
    let attachment = AttachmentId::from_uuid(Uuid::max());
    assert_eq!(
        object_key(user, attachment),
        format!("attachments/{user}/{attachment}")
    );
    assert_eq!(
        content_disposition("attachment", "résumé 1.pdf"),
        "attachment; filename=\"r_sum_ 1.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%201.pdf"
    );
}
