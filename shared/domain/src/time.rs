//! Instants on the wire: epoch milliseconds (ARCHITECTURE §9), checked to a range Postgres
//! and chrono can hold.

use chrono::{DateTime, NaiveDate, Utc};

/// An instant given as epoch milliseconds (a number, or a JS `Date` through oRPC's `meta`),
/// within 1970-01-01T00:00:00.000Z ..= 9999-12-31T23:59:59.999Z: anything else fails to
/// deserialize (the api answers a 400 naming the field), never a timestamp Postgres or
/// chrono's arithmetic cannot hold. In SQL it is the `timestamptz` it wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, sqlx::Type)]
#[sqlx(transparent)]
pub struct EpochMillis(DateTime<Utc>);

impl EpochMillis {
    pub const MIN: i64 = 0;
    /// 9999-12-31T23:59:59.999Z.
    pub const MAX: i64 = 253_402_300_799_999;

    pub fn from_millis(millis: i64) -> Option<Self> {
        if (Self::MIN..=Self::MAX).contains(&millis) {
            DateTime::from_timestamp_millis(millis).map(Self)
        } else {
            None
        }
    }

    /// The current instant (a row this process writes now).
    pub fn now() -> Self {
        Self(Utc::now())
    }

    pub fn at(self) -> DateTime<Utc> {
        self.0
    }

    pub fn millis(self) -> i64 {
        self.0.timestamp_millis()
    }
}

/// An instant read from somewhere that already holds one (a `timestamptz`, the clock): no
/// range check, which only guards what clients send.
impl From<DateTime<Utc>> for EpochMillis {
    fn from(at: DateTime<Utc>) -> Self {
        Self(at)
    }
}

impl From<EpochMillis> for DateTime<Utc> {
    fn from(at: EpochMillis) -> Self {
        at.0
    }
}

/// serde's "expected" phrase of [`EpochMillis`], which the api's issue mapping recognises
/// to name the allowed range.
pub const EPOCH_MILLIS_EXPECTED: &str = "epoch milliseconds";

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

impl serde::Serialize for EpochMillis {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.millis())
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for EpochMillis {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EpochMillis".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "integer",
            "format": "epoch-millis",
            "minimum": EpochMillis::MIN,
            "maximum": EpochMillis::MAX,
        })
    }
}

/// A calendar date as clients send it, `YYYY-MM-DD`, parsed once, when the input is read.
///
/// Reading it never fails: a malformed date is kept as its text and [`date`](Self::date) is
/// `None`, so the input's checks report it together with every other issue of the input
/// (serde would stop at the first error) and no code parses the text again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateInput {
    text: String,
    date: Option<NaiveDate>,
}

impl DateInput {
    pub fn parse(text: impl Into<String>) -> Self {
        let text = text.into();
        // Exactly `YYYY-MM-DD`: chrono alone also takes `2024-1-5`.
        let date = NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .ok()
            .filter(|_| text.len() == 10);
        Self { text, date }
    }

    /// The date; `None` when the text is not a `YYYY-MM-DD` date (the input's checks refuse
    /// such an input before any code asks).
    pub fn date(&self) -> Option<NaiveDate> {
        self.date
    }

    /// The text as sent.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl<'de> serde::Deserialize<'de> for DateInput {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::parse)
    }
}

impl serde::Serialize for DateInput {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for DateInput {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DateInput".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_ends_are_accepted_and_beyond_them_refused() {
        assert!(EpochMillis::from_millis(EpochMillis::MIN).is_some());
        assert!(EpochMillis::from_millis(EpochMillis::MAX).is_some());
        assert!(EpochMillis::from_millis(-1).is_none());
        assert!(EpochMillis::from_millis(EpochMillis::MAX + 1).is_none());
        let error = serde_json::from_str::<EpochMillis>("-1")
            .err()
            .map(|error| error.to_string());
        assert!(error.is_some_and(|text| text.contains(EPOCH_MILLIS_EXPECTED)));
    }

    #[test]
    fn it_round_trips_as_milliseconds() -> Result<(), serde_json::Error> {
        let at: EpochMillis = serde_json::from_str("1733580000123")?;
        assert_eq!(at.millis(), 1_733_580_000_123);
        assert_eq!(serde_json::to_string(&at)?, "1733580000123");
        Ok(())
    }

    #[test]
    fn a_date_input_is_parsed_once_and_a_malformed_one_kept_as_text()
    -> Result<(), serde_json::Error> {
        let date: DateInput = serde_json::from_str("\"2024-02-29\"")?;
        assert_eq!(date.date(), NaiveDate::from_ymd_opt(2024, 2, 29));
        assert_eq!(serde_json::to_string(&date)?, "\"2024-02-29\"");
        for malformed in ["2023-02-29", "2024-1-5", "29.02.2024", ""] {
            let read: DateInput = serde_json::from_str(&format!("\"{malformed}\""))?;
            assert_eq!(read.date(), None, "{malformed}");
            assert_eq!(read.text(), malformed);
        }
        assert!(serde_json::from_str::<DateInput>("20240229").is_err());
        Ok(())
    }
}
