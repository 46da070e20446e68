use chrono::DateTime;
use uuid::Uuid;

use super::data::{PAGE_TEXT_BYTES, cut_page};
use crate::http::pagination::KeysetCursor;

#[test]
fn pages_keep_at_least_one_row_and_stop_at_the_text_budget() {
    let at = DateTime::from_timestamp_micros(1_700_000_000_000_000).unwrap_or_default();
    let key = |size: &(usize, Uuid)| KeysetCursor {
        created_at: at,
        id: size.1,
    };
    // One huge row alone still makes a page.
    let mut rows = vec![(PAGE_TEXT_BYTES * 2, Uuid::nil()), (10, Uuid::max())];
    let next = cut_page(&mut rows, |row| row.0, key);
    assert_eq!(rows.len(), 1);
    assert_eq!(next, key(&(0, Uuid::nil())).encode());
    // Small rows all fit: no next page when nothing was left over.
    let mut rows: Vec<(usize, Uuid)> = (0..5).map(|_| (100, Uuid::new_v4())).collect();
    assert_eq!(cut_page(&mut rows, |row| row.0, key), "");
    assert_eq!(rows.len(), 5);
    // Rows over the budget go to the next page.
    let mut rows: Vec<(usize, Uuid)> = (0..4)
        .map(|_| (PAGE_TEXT_BYTES / 3, Uuid::new_v4()))
        .collect();
    let last_kept = rows[2].1;
    let next = cut_page(&mut rows, |row| row.0, key);
    assert_eq!(rows.len(), 3);
    assert_eq!(next, key(&(0, last_kept)).encode());
}
