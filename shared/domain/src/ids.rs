//! Typed ids. Each kind of id is its own type over a [`Uuid`], so ids of different kinds
//! cannot be mixed up, and each is parsed once where it enters:
//!
//! - JSON (request bodies, RPC inputs): `Deserialize` is the uuid's, with its error text, so
//!   a malformed id is the same 400 naming the field as before;
//! - bus messages, whose protobuf fields stay strings (a field's wire type cannot change
//!   while an older release still reads it): each id field of a message has generated
//!   accessors (`event.parse_author_user_id()`, `event.parse_optional_team_id()`, from
//!   `shared/messages/build.rs`) over [`parse_field`](UserId::parse_field) and
//!   [`parse_optional_field`](UserId::parse_optional_field), used at the handler's edge, with
//!   an [`IdError`] naming the field;
//! - SQL: `sqlx` encodes and decodes each as the `uuid` it wraps (arrays included).
//!
//! Emitting goes the other way through `Display` (the hyphenated uuid).

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// An id field that does not hold an id of its kind: which field, and why.
///
/// Deliberately not a `std::error::Error`: a bus handler's `?` turns any such error into a
/// *retryable* failure, and a malformed id never gets better by retrying. Without the impl,
/// `?` does not compile and the handler says what it means
/// (`.map_err(HandlerError::permanent)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    Missing { field: &'static str },
    Malformed { field: &'static str, value: String },
}

impl fmt::Display for IdError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { field } => write!(formatter, "{field} is missing"),
            Self::Malformed { field, value } => {
                write!(formatter, "{field} `{value}` is not a uuid")
            }
        }
    }
}

impl IdError {
    /// The field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Missing { field } | Self::Malformed { field, .. } => field,
        }
    }
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize, sqlx::Type,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wrap a uuid that is known to be an id of this kind.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// A new id, time-ordered (UUIDv7), for a row this process creates.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// The uuid, for code that speaks plain uuids (a URL, a log field, a test).
            pub const fn uuid(self) -> Uuid {
                self.0
            }

            /// Parse a required id field of a bus message (protobuf strings: empty means
            /// absent, which is an error here).
            pub fn parse_field(field: &'static str, value: &str) -> Result<Self, IdError> {
                if value.is_empty() {
                    return Err(IdError::Missing { field });
                }
                Uuid::parse_str(value)
                    .map(Self)
                    .map_err(|_| IdError::Malformed { field, value: value.to_owned() })
            }

            /// Parse an optional id field of a bus message: empty is `None`.
            pub fn parse_optional_field(
                field: &'static str,
                value: &str,
            ) -> Result<Option<Self>, IdError> {
                if value.is_empty() {
                    Ok(None)
                } else {
                    Self::parse_field(field, value).map(Some)
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, formatter)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(text).map(Self)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        /// The contract's schema is the uuid's, inlined: a field's type does not show.
        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                <Uuid as schemars::JsonSchema>::inline_schema()
            }

            fn schema_name() -> std::borrow::Cow<'static, str> {
                <Uuid as schemars::JsonSchema>::schema_name()
            }

            fn schema_id() -> std::borrow::Cow<'static, str> {
                <Uuid as schemars::JsonSchema>::schema_id()
            }

            fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                <Uuid as schemars::JsonSchema>::json_schema(generator)
            }
        }

        /// OpenAPI: the uuid's schema. Derived schemas name the field's type `Uuid` through
        /// the api's utoipa aliases (`services/api/build.rs`), so they inline it as before.
        #[cfg(feature = "schema")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                    .into()
            }
        }

        #[cfg(feature = "schema")]
        impl utoipa::ToSchema for $name {}
    };
}

define_id!(
    /// A user (`users.user_id`): an account, an author, a team member.
    UserId
);
define_id!(
    /// An app team (`teams.team_id`).
    TeamId
);
define_id!(
    /// An invitation to an app team (`team_invitations.team_invitation_id`).
    TeamInvitationId
);
define_id!(
    /// A journal entry (`journal_entries.journal_entry_id`).
    JournalEntryId
);
define_id!(
    /// A prompt (`prompts.prompt_id`).
    PromptId
);
define_id!(
    /// An attachment of a journal entry (`attachments.attachment_id`).
    AttachmentId
);
define_id!(
    /// A login session (`sessions.session_id`).
    SessionId
);
define_id!(
    /// A data export (`exports.export_id`).
    ExportId
);
define_id!(
    /// An API team, the open API's side of a team (`api_teams.api_team_id`).
    ApiTeamId
);
define_id!(
    /// An open API key (`api_keys.api_key_id`).
    ApiKeyId
);
define_id!(
    /// An API team's plan subscription (`subscriptions.subscription_id`).
    SubscriptionId
);

/// The ids' type names, for the api's utoipa aliases (each is documented as a `Uuid`).
pub const ID_TYPE_NAMES: [&str; 11] = include!("id_type_names.rs");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_its_uuid_on_the_wire() -> Result<(), serde_json::Error> {
        let uuid = Uuid::now_v7();
        let user_id = UserId::from_uuid(uuid);
        assert_eq!(
            serde_json::to_string(&user_id)?,
            serde_json::to_string(&uuid)?
        );
        assert_eq!(user_id.to_string(), uuid.to_string());
        let read: UserId = serde_json::from_str(&format!("\"{uuid}\""))?;
        assert_eq!(read, user_id);
        Ok(())
    }

    #[test]
    fn a_malformed_id_in_json_fails_as_a_uuid_would() {
        let id_error = serde_json::from_str::<UserId>("\"not-a-uuid\"")
            .err()
            .map(|error| error.to_string());
        let uuid_error = serde_json::from_str::<Uuid>("\"not-a-uuid\"")
            .err()
            .map(|error| error.to_string());
        assert!(id_error.is_some());
        assert_eq!(id_error, uuid_error);
    }

    #[test]
    fn message_fields_parse_with_the_field_named() {
        let uuid = Uuid::now_v7();
        assert_eq!(
            TeamId::parse_field("team_id", &uuid.to_string()),
            Ok(TeamId::from_uuid(uuid))
        );
        assert_eq!(
            TeamId::parse_field("team_id", ""),
            Err(IdError::Missing { field: "team_id" })
        );
        assert_eq!(TeamId::parse_optional_field("team_id", ""), Ok(None));
        let malformed = TeamId::parse_optional_field("team_id", "12");
        assert_eq!(
            malformed,
            Err(IdError::Malformed {
                field: "team_id",
                value: "12".to_owned()
            })
        );
        assert_eq!(malformed.err().map(|error| error.field()), Some("team_id"));
    }
}
