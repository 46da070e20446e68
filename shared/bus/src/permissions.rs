//! What each service may do on NATS: one user per service whose permissions allow publishing
//! only the events, tasks, changes and queries that service really sends, and consuming only
//! the streams it reads. The lists are derived from the message definitions
//! (`shared/messages`) and the bus's stream and consumer layout, and rendered into
//! `deploy/k8s/nats/accounts.conf` by [`accounts_conf`] (a test fails when the file drifts, and
//! another runs the five services under it).
//!
//! Without a namespace (`BUS_NAMESPACE` empty), as in production.

use messages::definition::{BusMessage, Query};
use messages::journal::v1::{
    ApiKeyCreated, ApiKeyRevoked, AttachmentVerified, CleanUpAbandonedUploads, DispatchDuePrompts,
    ExportDataRequest, ExportReady, ExportUserData, JournalEntryCreated, JournalEntryDeleted,
    JournalEntryRestored, JournalEntryUpdated, PromptDue, PurgeExpiredSessions, RetentionPurgeDue,
    RollOverUsage, SessionRevoked, TeamInvitationCreated, TeamMemberJoined, TeamMemberLeft,
    UserCreated, UserDeleted, UserProfileUpdated, VerifyAttachment,
};

use crate::streams::STREAM_NAMES;

/// One service's NATS user and what it may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePermissions {
    /// The binary, e.g. `worker`.
    pub service: &'static str,
    /// Its NATS user (the same name as its database role), e.g. `journal_worker`.
    pub user: &'static str,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// May answer requests (publish to the reply subject of a message it received).
    pub allow_responses: bool,
}

/// The environment variable that holds `user`'s password on the NATS server
/// (`JOURNAL_WORKER_NATS_PASSWORD`); the accounts file refers to it, never to a value.
pub fn password_variable(user: &str) -> String {
    format!("{}_NATS_PASSWORD", user.to_ascii_uppercase())
}

/// The JetStream API every service uses: account info (readiness), and looking up or creating
/// the three streams at start.
fn jetstream_common() -> Vec<String> {
    let mut subjects = vec!["$JS.API.INFO".to_owned()];
    for stream in STREAM_NAMES {
        subjects.push(format!("$JS.API.STREAM.INFO.{stream}"));
        subjects.push(format!("$JS.API.STREAM.CREATE.{stream}"));
    }
    subjects
}

/// The JetStream API a service needs to read `stream`: its consumers (create, info, next
/// batch, delete), acknowledgements, and single messages by sequence.
fn consume(stream: &str) -> Vec<String> {
    vec![
        format!("$JS.API.CONSUMER.*.{stream}"),
        format!("$JS.API.CONSUMER.*.{stream}.>"),
        format!("$JS.API.CONSUMER.*.*.{stream}.>"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.ACK.{stream}.>"),
    ]
}

/// Every service's permissions.
pub fn service_permissions() -> Vec<ServicePermissions> {
    let entry = |service: &'static str,
                 consumes: &[&str],
                 sends: Vec<String>,
                 listens: Vec<String>,
                 allow_responses: bool| {
        let user = platform::roles::role_of_service(service)
            .map(|role| role.role)
            .unwrap_or(service);
        let inbox = format!("{}.>", platform::nats::inbox_prefix(user));
        let mut publish = jetstream_common();
        for stream in consumes {
            publish.extend(consume(stream));
        }
        publish.extend(sends);
        // Its own inbox: a request to itself confirms the server processed earlier commands.
        publish.push(inbox.clone());
        let mut subscribe = vec![inbox];
        subscribe.extend(listens);
        ServicePermissions {
            service,
            user,
            publish,
            subscribe,
            allow_responses,
        }
    };
    vec![
        entry(
            "api",
            &["EVENTS", "TASKS"],
            vec![
                JournalEntryCreated::subject(),
                JournalEntryUpdated::subject(),
                JournalEntryDeleted::subject(),
                JournalEntryRestored::subject(),
                SessionRevoked::subject(),
                UserCreated::subject(),
                UserProfileUpdated::subject(),
                UserDeleted::subject(),
                TeamInvitationCreated::subject(),
                TeamMemberJoined::subject(),
                TeamMemberLeft::subject(),
                ApiKeyCreated::subject(),
                ApiKeyRevoked::subject(),
                PromptDue::subject(),
                VerifyAttachment::subject(),
                ExportUserData::subject(),
                // sync changesets, `changes.<scope>`
                "changes.>".to_owned(),
                // API key revocations between replicas (core NATS)
                "api_keys.invalidate".to_owned(),
            ],
            vec![
                "api_keys.invalidate".to_owned(),
                // it answers the worker's export question
                ExportDataRequest::subject(),
            ],
            true,
        ),
        entry(
            "sync-streamer",
            // CHANGES: the materializer and live tails; EVENTS: session revocations.
            &["CHANGES", "EVENTS"],
            Vec::new(),
            Vec::new(),
            false,
        ),
        entry(
            "worker",
            &["EVENTS", "TASKS"],
            vec![
                ExportReady::subject(),
                AttachmentVerified::subject(),
                "changes.>".to_owned(),
                // asks the api for a user's data to export
                ExportDataRequest::subject(),
            ],
            Vec::new(),
            false,
        ),
        entry(
            "cron",
            &["EVENTS"],
            vec![
                DispatchDuePrompts::subject(),
                PurgeExpiredSessions::subject(),
                RollOverUsage::subject(),
                CleanUpAbandonedUploads::subject(),
                RetentionPurgeDue::subject(),
            ],
            Vec::new(),
            false,
        ),
        entry("notifier", &["EVENTS"], Vec::new(), Vec::new(), false),
    ]
}

/// The permissions of one service.
pub fn permissions_of(service: &str) -> Option<ServicePermissions> {
    service_permissions()
        .into_iter()
        .find(|permissions| permissions.service == service)
}

fn quoted_list(subjects: &[String]) -> String {
    subjects
        .iter()
        .map(|subject| format!("          \"{subject}\""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The NATS server's `authorization` block: the five service users, each with its password
/// from an environment variable of the server ([`password_variable`]) and its permissions.
/// This is the text of `deploy/k8s/nats/accounts.conf`.
pub fn accounts_conf() -> String {
    let mut text = String::from(
        "# The services' NATS users and what each may publish and subscribe to.\n\
         # GENERATED by `bus::permissions::accounts_conf` (shared/bus/src/permissions.rs) from the\n\
         # message definitions; a test fails when this file drifts from it, and another runs the\n\
         # five services under it. Passwords come from the server's environment\n\
         # (JOURNAL_<SERVICE>_NATS_PASSWORD, from the Secret journal-nats-passwords): never here.\n\
         # Included by nats-server.conf. docs/operations.md, \"NATS: the cluster, the streams and\n\
         # the service users\".\n\
         authorization {\n  users: [\n",
    );
    for permissions in service_permissions() {
        text.push_str(&format!(
            "    # {service}\n    {{\n      user: {user}\n      password: ${variable}\n      permissions: {{\n        publish: {{ allow: [\n{publish}\n        ] }}\n        subscribe: {{ allow: [\n{subscribe}\n        ] }}\n{responses}      }}\n    }}\n",
            service = permissions.service,
            user = permissions.user,
            variable = password_variable(permissions.user),
            publish = quoted_list(&permissions.publish),
            subscribe = quoted_list(&permissions.subscribe),
            responses = if permissions.allow_responses {
                "        # replies to the requests it answers\n        allow_responses: true\n"
            } else {
                ""
            },
        ));
    }
    text.push_str("  ]\n}\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_has_a_user_and_publishes_only_its_own_messages() {
        let all = service_permissions();
        assert_eq!(all.len(), 5);
        let worker = permissions_of("worker").unwrap();
        assert_eq!(worker.user, "journal_worker");
        assert!(worker.publish.contains(&"events.export.ready".to_owned()));
        assert!(!worker.publish.contains(&"events.user.created".to_owned()));
        assert!(!worker.publish.iter().any(|subject| subject == "events.>"));
        assert!(
            worker
                .subscribe
                .contains(&"_INBOX_journal_worker.>".to_owned())
        );
        let notifier = permissions_of("notifier").unwrap();
        assert!(!notifier.publish.iter().any(|subject| {
            ["events.", "tasks.", "changes.", "queries."]
                .iter()
                .any(|root| subject.starts_with(root))
                || subject.starts_with("$JS.API.CONSUMER.*.TASKS")
        }));
    }

    #[test]
    fn the_file_names_variables_not_passwords() {
        let conf = accounts_conf();
        assert!(conf.contains("password: $JOURNAL_API_NATS_PASSWORD"));
        assert!(conf.contains("user: journal_sync"));
    }
}
