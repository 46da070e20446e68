//! Typed messages for the bus. The protobuf definitions live in `proto/`; this crate exposes
//! the generated types by package (e.g. `messages::journal::v1::JournalEntryCreated`) and
//! binds each to its bus name and delivery settings.

pub mod definition;

pub mod journal {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/journal.v1.rs"));
    }
}

use definition::DeliveryConfig;
use journal::v1::{BusProbe, JournalEntryCreated};

define_event!(JournalEntryCreated, "journal_entry.created");
// The probe is a task on the `bus_probe` queue with short retries so tests run quickly.
define_task!(
    BusProbe,
    queue = "bus_probe",
    "probe",
    DeliveryConfig {
        retry_limit: 3,
        retry_delay: std::time::Duration::from_millis(200),
        retry_backoff: true,
        expire_in: std::time::Duration::from_secs(5),
    }
);

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::definition::BusMessage;
    use super::journal::v1::{BusProbe, JournalEntryCreated};

    #[test]
    fn generated_types_round_trip() {
        let event = JournalEntryCreated {
            journal_entry_id: "entry".into(),
            author_user_id: "user".into(),
            team_id: String::new(),
            created_at_ms: 1_764_000_000_000,
        };
        let bytes = event.encode_to_vec();
        let decoded = JournalEntryCreated::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, event);
    }

    #[test]
    fn subjects_follow_the_destination() {
        assert_eq!(
            JournalEntryCreated::subject(),
            "events.journal_entry.created"
        );
        assert_eq!(BusProbe::subject(), "tasks.bus_probe.probe");
    }
}
