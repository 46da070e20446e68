//! Keyset pagination shared by the list procedures: newest first by `(created_at, id)`, so
//! rows inserted after page 1 was read never shift later pages. The cursor is opaque to
//! clients (base64url of `<created_at µs>:<id>`).

use base64::Engine;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Where the next page starts: strictly after this row, in `(created_at DESC, id DESC)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysetCursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl KeysetCursor {
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            "{}:{}",
            self.created_at.timestamp_micros(),
            self.id
        ))
    }

    /// `None` for anything we did not issue.
    pub fn decode(text: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (micros, id) = text.split_once(':')?;
        Some(Self {
            created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id: id.parse().ok()?,
        })
    }
}

/// Cut a page fetched with `LIMIT limit + 1` down to `limit` rows and say where the next one
/// starts (`None` on the last page).
pub fn finish_page<T>(
    items: &mut Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> KeysetCursor,
) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(0);
    if items.len() <= limit {
        return None;
    }
    items.truncate(limit);
    items.last().map(|last| key(last).encode())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = KeysetCursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(KeysetCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(KeysetCursor::decode("not a cursor!"), None);
        assert_eq!(KeysetCursor::decode("MTIz"), None);
    }

    #[test]
    fn a_page_is_cut_to_its_limit_with_a_cursor_only_when_more_follow() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_000_000).unwrap();
        let key = |id: &Uuid| KeysetCursor {
            created_at: at,
            id: *id,
        };
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let mut page = ids.clone();
        let next = finish_page(&mut page, 2, key);
        assert_eq!(page, ids[..2]);
        assert_eq!(next, Some(key(&ids[1]).encode()));
        let mut last = ids.clone();
        assert_eq!(finish_page(&mut last, 3, key), None);
        assert_eq!(last.len(), 3);
    }
}
