//! Typed messages for the bus. The protobuf definitions live in `proto/`; this crate exposes
//! the generated types by package (e.g. `messages::journal::v1::JournalEntryCreated`) and
//! binds each to its bus name and delivery settings.

pub mod definition;

pub mod journal {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/journal.v1.rs"));
    }
}

/// The sync changeset (`changes.<scope>`): not a bus event or task but a stream of its own,
/// written through the outbox with `bus::outbox::emit_raw`.
pub mod sync {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/sync.v1.rs"));
    }
}

use definition::DeliveryConfig;
use journal::v1::{
    ApiKeyCreated, ApiKeyRevoked, BusProbe, ExportDataReply, ExportDataRequest, ExportReady,
    ExportUserData, JournalEntryCreated, JournalEntryDeleted, JournalEntryRestored,
    JournalEntryUpdated, SessionRevoked, TeamInvitationCreated, TeamMemberJoined, TeamMemberLeft,
    UserCreated, UserDeleted,
};

define_event!(JournalEntryCreated, "journal_entry.created");
define_event!(JournalEntryUpdated, "journal_entry.updated");
define_event!(JournalEntryDeleted, "journal_entry.deleted");
define_event!(JournalEntryRestored, "journal_entry.restored");
define_event!(SessionRevoked, "session.revoked");
define_event!(UserCreated, "user.created");
define_event!(UserDeleted, "user.deleted");
define_event!(TeamInvitationCreated, "team.invitation_created");
define_event!(TeamMemberJoined, "team.member_joined");
define_event!(TeamMemberLeft, "team.member_left");
define_event!(ApiKeyCreated, "api_key.created");
define_event!(ApiKeyRevoked, "api_key.revoked");
define_event!(ExportReady, "export.ready");
// A data export can take a while: progress acks keep a running one alive, so the ack wait only
// decides how soon a replica that died mid-export is replaced (30 s).
define_task!(
    ExportUserData,
    queue = "exports",
    "export_user_data",
    DeliveryConfig {
        retry_limit: 3,
        retry_delay: std::time::Duration::from_secs(30),
        retry_backoff: true,
        expire_in: std::time::Duration::from_secs(30),
    }
);
define_query!(
    ExportDataRequest,
    "api.export_data",
    reply = ExportDataReply
);
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
            version: 1,
            facts: None,
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
