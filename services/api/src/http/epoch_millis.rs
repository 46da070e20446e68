//! Timestamps on the wire: epoch milliseconds (ARCHITECTURE §9), checked to a range Postgres
//! and chrono can hold.

/// An instant given as epoch milliseconds (a number, or a JS `Date` through `meta`), within
/// 1970-01-01T00:00:00.000Z ..= 9999-12-31T23:59:59.999Z: anything else is a 400 naming the
/// field, never a timestamp Postgres or chrono's arithmetic cannot hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EpochMillis(chrono::DateTime<chrono::Utc>);

impl EpochMillis {
    pub const MIN: i64 = 0;
    /// 9999-12-31T23:59:59.999Z.
    pub const MAX: i64 = 253_402_300_799_999;

    pub fn from_millis(millis: i64) -> Option<Self> {
        if (Self::MIN..=Self::MAX).contains(&millis) {
            chrono::DateTime::from_timestamp_millis(millis).map(Self)
        } else {
            None
        }
    }

    pub fn at(self) -> chrono::DateTime<chrono::Utc> {
        self.0
    }

    pub fn millis(self) -> i64 {
        self.0.timestamp_millis()
    }
}

impl<'de> serde::Deserialize<'de> for EpochMillis {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let millis = i64::deserialize(deserializer)?;
        Self::from_millis(millis).ok_or_else(|| {
            serde::de::Error::invalid_value(
                serde::de::Unexpected::Signed(millis),
                &EPOCH_MILLIS_EXPECTED,
            )
        })
    }
}

/// serde's "expected" phrase of [`EpochMillis`], recognised by `Issue::from_serde`.
pub const EPOCH_MILLIS_EXPECTED: &str = "epoch milliseconds";
