//! Typed messages for the bus. The protobuf definitions live in `proto/`; this crate exposes
//! the generated types by package (e.g. `messages::journal::v1::JournalEntryCreated`) and
//! binds each to its bus name and delivery settings. Ids travel as strings (so an older
//! release reads what a newer one writes); each id field has typed accessors generated from
//! its name, e.g. `event.parse_author_user_id()` → `Result<UserId, IdError>` and
//! `event.parse_optional_team_id()` → `Result<Option<TeamId>, IdError>`.

pub mod definition;

pub mod journal {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/journal.v1.rs"));
        // `parse_<field>()` for each id field (build.rs, `typed_id_accessors`).
        include!(concat!(env!("OUT_DIR"), "/journal.v1.ids.rs"));
    }
}

/// The sync changeset (`changes.<scope>`): not a bus event or task but a stream of its own,
/// written through the outbox with `bus::outbox::emit_raw`.
pub mod sync {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/sync.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/sync.v1.ids.rs"));
    }
}

use std::fmt::Display;
use std::time::Duration;

/// The object key of a data export's archive, `exports/<userId>/<exportId>.json`: part of the
/// contract between the worker, which writes it, and the api, which deletes it when the
/// account is deleted (a presigned link cannot be revoked; a missing object refuses it).
pub fn export_archive_key(user_id: impl Display, export_id: impl Display) -> String {
    format!("exports/{user_id}/{export_id}.json")
}

use definition::DeliveryConfig;
use journal::v1::{
    ApiKeyCreated, ApiKeyRevoked, AttachmentVerified, BusProbe, CleanUpAbandonedUploads,
    DispatchDuePrompts, ExportDataReply, ExportDataRequest, ExportReady, ExportUserData,
    JournalEntryCreated, JournalEntryDeleted, JournalEntryRestored, JournalEntryUpdated, PromptDue,
    PurgeExpiredSessions, RetentionPurgeDue, RollOverUsage, SessionRevoked,
    SubscriptionApiAccessChanged, SubscriptionPeriodClosed, SubscriptionPlanChanged,
    TeamInvitationCreated, TeamMemberJoined, TeamMemberLeft, UserCreated, UserDeleted,
    UserProfileUpdated, UserPurged, VerifyAttachment,
};

/// Events the notifier turns into SuprSend calls: SuprSend being slow or down for a while
/// must not dead-letter a notification, so 10 retries from 1 s doubling (about 17 minutes
/// in all); a `Retry-After` longer than the backoff is honoured (`HandlerError::retry_after`).
pub const NOTIFICATION_DELIVERY: DeliveryConfig = DeliveryConfig {
    retry_limit: 10,
    retry_delay: Duration::from_secs(1),
    retry_backoff: true,
    expire_in: Duration::from_secs(60),
};

/// Tasks of scheduled jobs: a few quick retries — the next tick runs the job again anyway.
pub const CRON_TASK_DELIVERY: DeliveryConfig = DeliveryConfig {
    retry_limit: 3,
    retry_delay: Duration::from_secs(5),
    retry_backoff: true,
    expire_in: Duration::from_secs(120),
};

define_event!(JournalEntryCreated, "journal_entry.created");
define_event!(JournalEntryUpdated, "journal_entry.updated");
define_event!(JournalEntryDeleted, "journal_entry.deleted");
define_event!(JournalEntryRestored, "journal_entry.restored");
define_event!(SessionRevoked, "session.revoked");
define_event!(UserCreated, "user.created", NOTIFICATION_DELIVERY);
define_event!(
    UserProfileUpdated,
    "user.profile_updated",
    NOTIFICATION_DELIVERY
);
define_event!(UserDeleted, "user.deleted");
define_event!(UserPurged, "user.purged");
define_event!(
    TeamInvitationCreated,
    "team.invitation_created",
    NOTIFICATION_DELIVERY
);
define_event!(TeamMemberJoined, "team.member_joined");
define_event!(TeamMemberLeft, "team.member_left");
define_event!(ApiKeyCreated, "api_key.created");
define_event!(ApiKeyRevoked, "api_key.revoked");
// For a billing system (docs/api.md, "Subscriptions"): plan changes, API access switched off
// or on, and each closed metering period with its count.
define_event!(SubscriptionPlanChanged, "subscription.plan_changed");
define_event!(
    SubscriptionApiAccessChanged,
    "subscription.api_access_changed"
);
define_event!(SubscriptionPeriodClosed, "subscription.period_closed");
define_event!(ExportReady, "export.ready", NOTIFICATION_DELIVERY);
define_event!(PromptDue, "prompt.due", NOTIFICATION_DELIVERY);
// Scheduled jobs (services/cron): tasks for the api, one event every service handles.
define_task!(
    DispatchDuePrompts,
    queue = "api",
    "dispatch_due_prompts",
    CRON_TASK_DELIVERY
);
define_task!(
    PurgeExpiredSessions,
    queue = "api",
    "purge_expired_sessions",
    CRON_TASK_DELIVERY
);
define_task!(
    RollOverUsage,
    queue = "api",
    "roll_over_usage",
    CRON_TASK_DELIVERY
);
define_task!(
    CleanUpAbandonedUploads,
    queue = "api",
    "clean_up_abandoned_uploads",
    CRON_TASK_DELIVERY
);
define_event!(
    RetentionPurgeDue,
    "retention.purge_due",
    DeliveryConfig {
        expire_in: Duration::from_secs(300),
        ..DeliveryConfig::EVENT_DEFAULT
    }
);
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
// Attachments (CDN): the api asks the worker to verify an upload; the worker's verdict comes
// back as an event. Verification reads at most one upload (25 MB by default) and makes one
// thumbnail: two minutes per attempt are plenty; a few quick retries ride out S3 hiccups.
define_task!(
    VerifyAttachment,
    queue = "media",
    "verify_attachment",
    DeliveryConfig {
        retry_limit: 5,
        retry_delay: Duration::from_secs(2),
        retry_backoff: true,
        expire_in: Duration::from_secs(120),
    }
);
define_event!(AttachmentVerified, "attachment.verified");
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
        retry_delay: Duration::from_millis(200),
        retry_backoff: true,
        expire_in: Duration::from_secs(5),
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
