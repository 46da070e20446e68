//! Reading `pgoutput`'s binary output (protocol version 1, `messages 'true'`) as the WAL
//! outbox needs it: transactions in commit order, each with the logical messages it emitted
//! (`pg_logical_emit_message(true, …)`) and the LSN just past its commit.
//!
//! Layouts (PostgreSQL's "Logical Replication Message Formats"; all integers big-endian):
//! - `B` Begin: final LSN (8), commit timestamp (8, µs since 2000-01-01), xid (4).
//! - `M` Message: flags (1, bit 0 = transactional), LSN (8), prefix (NUL-terminated),
//!   content length (4), content.
//! - `C` Commit: flags (1), commit LSN (8), end LSN (8), commit timestamp (8).
//!
//! With a publication that holds no table nothing else is sent; any other message type (an
//! origin, a relation, a row change of a publication someone widened) is skipped.

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
pub(super) const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One committed transaction's messages under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalTransaction {
    /// The LSN just past the commit record: advancing the slot there consumes this
    /// transaction and everything committed before it.
    pub end_lsn: u64,
    /// When it committed, in microseconds since the Unix epoch.
    pub committed_at_micros: i64,
    /// The contents of its messages with the wanted prefix, in emission order.
    pub messages: Vec<Vec<u8>>,
}

/// Why a `pgoutput` message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("a `{kind}` message ended early (needed {needed} more bytes)")]
    Truncated { kind: char, needed: usize },
    #[error("a message prefix is not NUL-terminated")]
    UnterminatedPrefix,
    #[error("a `{0}` message came outside a transaction")]
    OutsideTransaction(char),
    #[error("a transaction began before the previous one committed")]
    NestedBegin,
    #[error("an empty message")]
    Empty,
}

/// Assembles peeked `pgoutput` messages into whole transactions, keeping the messages whose
/// prefix is `prefix`. A transaction cut off by the end of a peek is not returned (a peek
/// with a change limit still ends at a commit, so that happens only on a bad read).
#[derive(Debug)]
pub struct TransactionReader<'a> {
    prefix: &'a [u8],
    open: Option<WalTransaction>,
    done: Vec<WalTransaction>,
}

impl<'a> TransactionReader<'a> {
    pub fn new(prefix: &'a str) -> Self {
        Self {
            prefix: prefix.as_bytes(),
            open: None,
            done: Vec::new(),
        }
    }

    /// Take the next message of the peek, in order.
    pub fn push(&mut self, data: &[u8]) -> Result<(), DecodeError> {
        let (&kind, body) = data.split_first().ok_or(DecodeError::Empty)?;
        let mut body = Reader {
            kind: kind as char,
            bytes: body,
        };
        match kind {
            b'B' => {
                if self.open.is_some() {
                    return Err(DecodeError::NestedBegin);
                }
                let _final_lsn = body.u64()?;
                let committed_at = body.i64()?;
                self.open = Some(WalTransaction {
                    end_lsn: 0,
                    committed_at_micros: committed_at.saturating_add(POSTGRES_EPOCH_MICROS),
                    messages: Vec::new(),
                });
            }
            b'M' => {
                let flags = body.u8()?;
                let _lsn = body.u64()?;
                let prefix = body.cstring()?;
                let length = body.u32()? as usize;
                let content = body.take(length)?;
                // A non-transactional message is not an outbox message (the outbox emits
                // inside the writing transaction only), whatever its prefix.
                if flags & 1 == 0 || prefix != self.prefix {
                    return Ok(());
                }
                let transaction = self
                    .open
                    .as_mut()
                    .ok_or(DecodeError::OutsideTransaction('M'))?;
                transaction.messages.push(content.to_vec());
            }
            b'C' => {
                let _flags = body.u8()?;
                let _commit_lsn = body.u64()?;
                let end_lsn = body.u64()?;
                let mut transaction = self
                    .open
                    .take()
                    .ok_or(DecodeError::OutsideTransaction('C'))?;
                transaction.end_lsn = end_lsn;
                self.done.push(transaction);
            }
            _ => {}
        }
        Ok(())
    }

    /// The transactions whose commit was read, in commit order.
    pub fn finish(self) -> Vec<WalTransaction> {
        self.done
    }
}

struct Reader<'a> {
    kind: char,
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < count {
            return Err(DecodeError::Truncated {
                kind: self.kind,
                needed: count - self.bytes.len(),
            });
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn cstring(&mut self) -> Result<&'a [u8], DecodeError> {
        let end = self
            .bytes
            .iter()
            .position(|&byte| byte == 0)
            .ok_or(DecodeError::UnterminatedPrefix)?;
        let text = &self.bytes[..end];
        self.bytes = &self.bytes[end + 1..];
        Ok(text)
    }
}

/// An LSN as PostgreSQL writes it (`16/B374D848`), for a `pg_lsn` parameter.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parse PostgreSQL's `hi/lo` LSN text.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    let high = u64::from_str_radix(high, 16).ok()?;
    let low = u64::from_str_radix(low, 16).ok()?;
    (high <= 0xFFFF_FFFF && low <= 0xFFFF_FFFF).then_some((high << 32) | low)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin(committed_at: i64) -> Vec<u8> {
        let mut data = vec![b'B'];
        data.extend(0x10_u64.to_be_bytes());
        data.extend(committed_at.to_be_bytes());
        data.extend(7_u32.to_be_bytes());
        data
    }

    fn message(transactional: bool, prefix: &str, content: &[u8]) -> Vec<u8> {
        let mut data = vec![b'M', u8::from(transactional)];
        data.extend(0x20_u64.to_be_bytes());
        data.extend(prefix.as_bytes());
        data.push(0);
        data.extend((content.len() as u32).to_be_bytes());
        data.extend(content);
        data
    }

    fn commit(end_lsn: u64) -> Vec<u8> {
        let mut data = vec![b'C', 0];
        data.extend((end_lsn - 8).to_be_bytes());
        data.extend(end_lsn.to_be_bytes());
        data.extend(0_i64.to_be_bytes());
        data
    }

    #[test]
    fn transactions_keep_their_own_prefix_in_order() {
        let mut reader = TransactionReader::new("bus.outbox.api");
        for data in [
            begin(1_000_000),
            message(true, "bus.outbox.api", b"one"),
            message(true, "bus.outbox.worker", b"not ours"),
            message(false, "bus.outbox.api", b"not transactional"),
            message(true, "bus.outbox.api", b"two"),
            commit(0x1_0000_0040),
            begin(2_000_000),
            commit(0x1_0000_0080),
        ] {
            reader.push(&data).unwrap();
        }
        let transactions = reader.finish();
        assert_eq!(transactions.len(), 2);
        assert_eq!(
            transactions[0].messages,
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        assert_eq!(transactions[0].end_lsn, 0x1_0000_0040);
        assert_eq!(
            transactions[0].committed_at_micros,
            1_000_000 + POSTGRES_EPOCH_MICROS
        );
        assert!(transactions[1].messages.is_empty());
        assert_eq!(transactions[1].end_lsn, 0x1_0000_0080);
    }

    #[test]
    fn a_transaction_without_its_commit_is_not_returned() {
        let mut reader = TransactionReader::new("p");
        reader.push(&begin(0)).unwrap();
        reader.push(&message(true, "p", b"x")).unwrap();
        assert!(reader.finish().is_empty());
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let mut reader = TransactionReader::new("p");
        assert_eq!(reader.push(&[]), Err(DecodeError::Empty));
        assert_eq!(
            reader.push(&[b'B', 0, 0]),
            Err(DecodeError::Truncated {
                kind: 'B',
                needed: 6
            })
        );
        assert_eq!(
            reader.push(&commit(64)),
            Err(DecodeError::OutsideTransaction('C'))
        );
        reader.push(&begin(0)).unwrap();
        assert_eq!(reader.push(&begin(0)), Err(DecodeError::NestedBegin));
        let mut unterminated = vec![b'M', 1];
        unterminated.extend(0_u64.to_be_bytes());
        unterminated.extend(b"no end");
        assert_eq!(
            reader.push(&unterminated),
            Err(DecodeError::UnterminatedPrefix)
        );
        let mut short = message(true, "p", b"content");
        short.truncate(short.len() - 3);
        assert_eq!(
            reader.push(&short),
            Err(DecodeError::Truncated {
                kind: 'M',
                needed: 3
            })
        );
    }

    #[test]
    fn lsns_round_trip_through_their_text() {
        for lsn in [0, 1, 0x16_B374_D848, u64::MAX] {
            assert_eq!(parse_lsn(&lsn_text(lsn)), Some(lsn));
        }
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nonsense"), None);
        assert_eq!(parse_lsn("1/2/3"), None);
    }
}
