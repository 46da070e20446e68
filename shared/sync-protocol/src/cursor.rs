//! The stream cursor (docs/sync.md, "Cursors"): where a client is in the CHANGES stream.
//!
//! Usually one sequence: the client holds every changeset it follows up to it. While a
//! transaction waits for a part, the stream sends other transactions' frames that lie past
//! the waiting part; their cursor is then the sequence before that part followed by the
//! sequences already sent past it, `<through>.<seq>.<seq>…` (ascending, each above
//! `through`). A client resuming from it gets the waiting transaction whole and none of the
//! listed changesets again. Clients treat the cursor as an opaque string.

use std::collections::BTreeSet;
use std::fmt;

/// The most sequences a cursor may list past its `through` (the stream sends far fewer: it
/// stops waiting for a transaction's part before the list grows past [`MAX_SENT_PAST`]).
pub const MAX_LISTED: usize = 256;

/// The stream sends a waiting transaction with what it has once this many changesets past it
/// went out (the cursor stays short).
pub const MAX_SENT_PAST: usize = 64;

/// A position in the CHANGES stream: everything the client follows up to `through`, and the
/// changesets in `past` beyond it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    through: u64,
    past: BTreeSet<u64>,
}

/// Why a cursor string is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("`{0}` is not a sequence number")]
    NotANumber(String),
    #[error("the listed sequences must be above the first and ascending")]
    NotAscending,
    #[error("a cursor lists at most {MAX_LISTED} sequences")]
    TooLong,
}

impl Cursor {
    /// Everything up to `through`.
    #[cfg(test)]
    pub fn at(through: u64) -> Self {
        Self {
            through,
            past: BTreeSet::new(),
        }
    }

    /// Parse `<through>` or `<through>.<seq>.<seq>…`.
    pub fn parse(raw: &str) -> Result<Self, CursorError> {
        let mut numbers = raw.trim().split('.').map(|part| {
            part.parse::<u64>()
                .map_err(|_| CursorError::NotANumber(part.to_owned()))
        });
        let through = numbers
            .next()
            .ok_or_else(|| CursorError::NotANumber(String::new()))??;
        let mut past = BTreeSet::new();
        let mut previous = through;
        for number in numbers {
            let seq = number?;
            if seq <= previous {
                return Err(CursorError::NotAscending);
            }
            if past.len() == MAX_LISTED {
                return Err(CursorError::TooLong);
            }
            past.insert(seq);
            previous = seq;
        }
        Ok(Self { through, past })
    }

    /// The sequence up to which the client holds everything it follows.
    pub fn through(&self) -> u64 {
        self.through
    }

    /// The highest sequence the client holds (`through` when nothing is listed).
    pub fn highest(&self) -> u64 {
        self.past.last().copied().unwrap_or(self.through)
    }

    /// Whether the client resumes from what it holds (any changeset), rather than starting
    /// fresh from cursor 0: only such a client can have rows to reset or drop.
    pub fn resumes(&self) -> bool {
        self.highest() > 0
    }

    /// Whether the client holds the changeset at `seq` (if it follows its scope).
    pub fn holds(&self, seq: u64) -> bool {
        seq <= self.through || self.past.contains(&seq)
    }

    /// The sequences held past `through`.
    pub fn listed(&self) -> &BTreeSet<u64> {
        &self.past
    }

    /// The changeset at `seq` was sent.
    pub fn add(&mut self, seq: u64) {
        if seq > self.through {
            self.past.insert(seq);
        }
    }

    /// Everything up to `through` is held (a cursor never goes back).
    pub fn advance(&mut self, through: u64) {
        if through > self.through {
            self.through = through;
            self.past = self.past.split_off(&(through + 1));
        }
    }

    /// This cursor moved to `through`, without changing it: the cursor of a frame that
    /// covers everything up to `through`.
    pub fn advanced(&self, through: u64) -> Self {
        let mut cursor = self.clone();
        cursor.advance(through);
        cursor
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.through)?;
        for seq in &self.past {
            write!(formatter, ".{seq}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_plain_sequence_round_trips() {
        let cursor = Cursor::parse("120").unwrap();
        assert_eq!(cursor, Cursor::at(120));
        assert!(cursor.resumes() && !Cursor::default().resumes());
        assert_eq!(cursor.to_string(), "120");
        assert!(cursor.holds(120) && !cursor.holds(121));
    }

    #[test]
    fn listed_sequences_are_held_and_drop_once_passed() {
        let mut cursor = Cursor::parse(" 9.11.14 ").unwrap();
        assert_eq!(cursor.to_string(), "9.11.14");
        assert!(cursor.holds(11) && cursor.holds(14) && !cursor.holds(10) && !cursor.holds(12));
        assert_eq!(cursor.highest(), 14);
        cursor.add(16);
        cursor.add(3);
        assert_eq!(cursor.to_string(), "9.11.14.16");
        cursor.advance(12);
        assert_eq!(cursor.to_string(), "12.14.16");
        cursor.advance(10);
        assert_eq!(cursor.to_string(), "12.14.16");
        assert_eq!(cursor.advanced(16).to_string(), "16");
    }

    #[test]
    fn malformed_cursors_are_refused() {
        assert_eq!(
            Cursor::parse("abc"),
            Err(CursorError::NotANumber("abc".to_owned()))
        );
        assert_eq!(
            Cursor::parse(""),
            Err(CursorError::NotANumber(String::new()))
        );
        assert_eq!(
            Cursor::parse("9."),
            Err(CursorError::NotANumber(String::new()))
        );
        assert_eq!(Cursor::parse("9.9"), Err(CursorError::NotAscending));
        assert_eq!(Cursor::parse("9.12.11"), Err(CursorError::NotAscending));
        assert_eq!(
            Cursor::parse("-1"),
            Err(CursorError::NotANumber("-1".to_owned()))
        );
        let long = (1..=MAX_LISTED as u64 + 1)
            .map(|seq| seq.to_string())
            .collect::<Vec<_>>()
            .join(".");
        assert_eq!(
            Cursor::parse(&format!("0.{long}")),
            Err(CursorError::TooLong)
        );
    }
}
