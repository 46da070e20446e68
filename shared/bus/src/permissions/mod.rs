//! What each service may do on NATS: one user per service whose permissions allow publishing
//! only the events, tasks, changes and queries that service really sends, and consuming only
//! the messages it handles: a consumer can be created only over the service's own subjects,
//! and pulled, acked or looked up only by its own name. The lists are derived from the message definitions
//! (`shared/messages`) and the bus's stream and consumer layout, and rendered into
//! `deploy/k8s/nats/accounts.conf` by [`accounts_conf`] (a test fails when the file drifts, and
//! another runs the five services under it).
//!
//! Without a namespace (`BUS_NAMESPACE` empty), as in production.

use messages::definition::{BusMessage, Event, Query, Task};
use messages::journal::v1::{
    ApiKeyCreated, ApiKeyRevoked, AttachmentVerified, CleanUpAbandonedUploads, DispatchDuePrompts,
    ExportDataRequest, ExportReady, ExportUserData, JournalEntryCreated, JournalEntryDeleted,
    JournalEntryRestored, JournalEntryUpdated, PromptDue, PurgeExpiredSessions, RetentionPurgeDue,
    RollOverUsage, SessionRevoked, SubscriptionApiAccessChanged, SubscriptionPeriodClosed,
    SubscriptionPlanChanged, TeamInvitationCreated, TeamMemberJoined, TeamMemberLeft, UserCreated,
    UserDeleted, UserProfileUpdated, UserPurged, VerifyAttachment,
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
    /// Publishes refused even where `publish` allows them (deny wins in NATS): the other
    /// services' durable consumers, for a service whose ordered consumers need a wildcard
    /// consumer name on the same stream.
    pub publish_deny: Vec<String>,
    pub subscribe: Vec<String>,
    /// May answer requests (publish to the reply subject of a message it received).
    pub allow_responses: bool,
}

/// How a service reads a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reads {
    /// A durable consumer of a [`crate::BusRouter`] handler: its name and its one subject are
    /// fixed, so every JetStream API call on it is allowed by exact subject.
    Durable {
        stream: &'static str,
        name: String,
        filter: String,
    },
    /// Ordered consumers (in memory on the server, a fresh name each time, e.g. the session
    /// revocation listeners): any name, but only over `filter` (`None`: the whole stream).
    Ordered {
        stream: &'static str,
        filter: Option<String>,
    },
}

impl Reads {
    fn stream(&self) -> &'static str {
        match self {
            Self::Durable { stream, .. } | Self::Ordered { stream, .. } => stream,
        }
    }

    /// The JetStream API subjects this reading needs.
    ///
    /// A consumer is created on `$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>` (async-nats
    /// uses that form whenever a consumer has a name and one filter subject), and the server
    /// refuses a request whose configured filter differs from the one in the subject. So
    /// allowing only subjects that end in the service's own filters means it cannot create a
    /// consumer on anyone else's messages; the unnamed form `…CREATE.<stream>`, which takes
    /// any filter, is allowed only where the whole stream is the service's to read.
    fn api_subjects(&self) -> Vec<String> {
        match self {
            Self::Durable {
                stream,
                name,
                filter,
            } => vec![
                format!("$JS.API.CONSUMER.CREATE.{stream}.{name}.{filter}"),
                format!("$JS.API.CONSUMER.INFO.{stream}.{name}"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"),
                format!("$JS.ACK.{stream}.{name}.>"),
            ],
            Self::Ordered { stream, filter } => {
                let mut subjects = match filter {
                    Some(filter) => vec![format!("$JS.API.CONSUMER.CREATE.{stream}.*.{filter}")],
                    None => vec![
                        format!("$JS.API.CONSUMER.CREATE.{stream}"),
                        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
                    ],
                };
                subjects.extend([
                    format!("$JS.API.CONSUMER.INFO.{stream}.*"),
                    format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
                    // an ordered consumer deletes its predecessor when it recreates itself
                    format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
                ]);
                subjects
            }
        }
    }
}

/// Reading event `E` through the bus router of `service`.
fn handles_event<E: Event>(service: &str) -> Reads {
    Reads::Durable {
        stream: "EVENTS",
        name: crate::router::event_consumer_name(service, E::NAME),
        filter: E::subject(),
    }
}

/// Reading task `T` through a bus router.
fn handles_task<T: Task>() -> Reads {
    Reads::Durable {
        stream: "TASKS",
        name: crate::router::task_consumer_name::<T>(),
        filter: T::subject(),
    }
}

/// A name for an ordered consumer: the permissions allow any name for one (they restrict its
/// subject), but only a named consumer is created through the subject that carries its filter.
pub fn ordered_consumer_name(purpose: &str) -> String {
    format!("{purpose}-{}", uuid::Uuid::new_v4().simple())
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

/// What one service does on NATS, before it is rendered into subjects.
struct Service {
    name: &'static str,
    reads: Vec<Reads>,
    /// Streams it reads single messages of by sequence (`STREAM.MSG.GET`).
    gets_messages_of: &'static [&'static str],
    sends: Vec<String>,
    listens: Vec<String>,
    allow_responses: bool,
}

/// What every service does on NATS: the handlers its bus router registers, its ordered
/// consumers, what it publishes and listens to.
fn services() -> Vec<Service> {
    vec![
        Service {
            name: "api",
            reads: vec![
                handles_task::<DispatchDuePrompts>(),
                handles_task::<PurgeExpiredSessions>(),
                handles_task::<RollOverUsage>(),
                handles_task::<CleanUpAbandonedUploads>(),
                handles_event::<RetentionPurgeDue>("api"),
                handles_event::<ExportReady>("api"),
                handles_event::<AttachmentVerified>("api"),
                // the session cache forgets revoked sessions
                Reads::Ordered {
                    stream: "EVENTS",
                    filter: Some(SessionRevoked::subject()),
                },
            ],
            gets_messages_of: &[],
            sends: vec![
                JournalEntryCreated::subject(),
                JournalEntryUpdated::subject(),
                JournalEntryDeleted::subject(),
                JournalEntryRestored::subject(),
                SessionRevoked::subject(),
                UserCreated::subject(),
                UserProfileUpdated::subject(),
                UserDeleted::subject(),
                UserPurged::subject(),
                TeamInvitationCreated::subject(),
                TeamMemberJoined::subject(),
                TeamMemberLeft::subject(),
                ApiKeyCreated::subject(),
                ApiKeyRevoked::subject(),
                SubscriptionPlanChanged::subject(),
                SubscriptionApiAccessChanged::subject(),
                SubscriptionPeriodClosed::subject(),
                PromptDue::subject(),
                VerifyAttachment::subject(),
                ExportUserData::subject(),
                // sync changesets, `changes.<scope>`
                "changes.>".to_owned(),
                // API key revocations between replicas (core NATS)
                "api_keys.invalidate".to_owned(),
            ],
            listens: vec![
                "api_keys.invalidate".to_owned(),
                // it answers the worker's export question
                ExportDataRequest::subject(),
            ],
            allow_responses: true,
        },
        Service {
            name: "sync-streamer",
            reads: vec![
                // the materializer and the live tails read all of CHANGES
                Reads::Ordered {
                    stream: "CHANGES",
                    filter: None,
                },
                // session revocations end streams
                Reads::Ordered {
                    stream: "EVENTS",
                    filter: Some(SessionRevoked::subject()),
                },
            ],
            // the lag gauge reads the oldest undelivered change's time
            gets_messages_of: &["CHANGES"],
            sends: Vec::new(),
            listens: Vec::new(),
            allow_responses: false,
        },
        Service {
            name: "worker",
            reads: vec![
                handles_event::<JournalEntryCreated>("worker"),
                handles_event::<JournalEntryUpdated>("worker"),
                handles_event::<JournalEntryDeleted>("worker"),
                handles_event::<JournalEntryRestored>("worker"),
                handles_event::<UserPurged>("worker"),
                handles_event::<RetentionPurgeDue>("worker"),
                handles_task::<ExportUserData>(),
                handles_task::<VerifyAttachment>(),
            ],
            gets_messages_of: &[],
            sends: vec![
                ExportReady::subject(),
                AttachmentVerified::subject(),
                "changes.>".to_owned(),
                // asks the api for a user's data to export
                ExportDataRequest::subject(),
            ],
            listens: Vec::new(),
            allow_responses: false,
        },
        Service {
            name: "cron",
            reads: vec![handles_event::<RetentionPurgeDue>("cron")],
            gets_messages_of: &[],
            sends: vec![
                DispatchDuePrompts::subject(),
                PurgeExpiredSessions::subject(),
                RollOverUsage::subject(),
                CleanUpAbandonedUploads::subject(),
                RetentionPurgeDue::subject(),
            ],
            listens: Vec::new(),
            allow_responses: false,
        },
        Service {
            name: "notifier",
            reads: vec![
                handles_event::<PromptDue>("notifier"),
                handles_event::<TeamInvitationCreated>("notifier"),
                handles_event::<ExportReady>("notifier"),
                handles_event::<UserCreated>("notifier"),
                handles_event::<UserProfileUpdated>("notifier"),
                handles_event::<UserDeleted>("notifier"),
                handles_event::<RetentionPurgeDue>("notifier"),
            ],
            gets_messages_of: &[],
            sends: Vec::new(),
            listens: Vec::new(),
            allow_responses: false,
        },
    ]
}

/// Every service's permissions.
pub fn service_permissions() -> Vec<ServicePermissions> {
    let services = services();
    let durables: Vec<(&'static str, &Reads)> = services
        .iter()
        .flat_map(|service| service.reads.iter().map(move |reads| (service.name, reads)))
        .filter(|(_, reads)| matches!(reads, Reads::Durable { .. }))
        .collect();
    services
        .iter()
        .map(|service| {
            let user = platform::roles::role_of_service(service.name)
                .map(|role| role.role)
                .unwrap_or(service.name);
            let inbox = format!("{}.>", platform::nats::inbox_prefix(user));
            let mut publish = jetstream_common();
            for reads in &service.reads {
                publish.extend(reads.api_subjects());
            }
            for stream in service.gets_messages_of {
                publish.push(format!("$JS.API.STREAM.MSG.GET.{stream}"));
            }
            publish.extend(service.sends.iter().cloned());
            // Its own inbox: a request to itself confirms the server processed earlier commands.
            publish.push(inbox.clone());
            // Wildcard consumer names (ordered consumers) would reach the other services'
            // durables on the same stream: pulling their messages, acking them, deleting or
            // reconfiguring them. Deny those by name.
            let ordered_streams: Vec<&str> = service
                .reads
                .iter()
                .filter(|reads| matches!(reads, Reads::Ordered { .. }))
                .map(Reads::stream)
                .collect();
            let mut publish_deny = Vec::new();
            for (owner, reads) in &durables {
                if let Reads::Durable { stream, name, .. } = reads
                    && *owner != service.name
                    && ordered_streams.contains(stream)
                {
                    let denied = [
                        format!("$JS.API.CONSUMER.CREATE.{stream}.{name}"),
                        format!("$JS.API.CONSUMER.CREATE.{stream}.{name}.>"),
                        format!("$JS.API.CONSUMER.INFO.{stream}.{name}"),
                        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"),
                        format!("$JS.API.CONSUMER.DELETE.{stream}.{name}"),
                        format!("$JS.ACK.{stream}.{name}.>"),
                    ];
                    for subject in denied {
                        if !publish_deny.contains(&subject) {
                            publish_deny.push(subject);
                        }
                    }
                }
            }
            let mut subscribe = vec![inbox];
            subscribe.extend(service.listens.iter().cloned());
            ServicePermissions {
                service: service.name,
                user,
                publish,
                publish_deny,
                subscribe,
                allow_responses: service.allow_responses,
            }
        })
        .collect()
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
        .map(|subject| format!("            \"{subject}\""))
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
            "    # {service}\n    {{\n      user: {user}\n      password: ${variable}\n      permissions: {{\n        publish: {{\n          allow: [\n{publish}\n          ]\n{deny}        }}\n        subscribe: {{ allow: [\n{subscribe}\n        ] }}\n{responses}      }}\n    }}\n",
            service = permissions.service,
            user = permissions.user,
            variable = password_variable(permissions.user),
            publish = quoted_list(&permissions.publish),
            deny = if permissions.publish_deny.is_empty() {
                String::new()
            } else {
                format!(
                    "          # the other services' durable consumers on the streams it reads with ordered consumers\n          deny: [\n{}\n          ]\n",
                    quoted_list(&permissions.publish_deny)
                )
            },
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
mod tests;
