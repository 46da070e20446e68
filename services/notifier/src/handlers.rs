//! The bus handlers: each event becomes one SuprSend request (see [`crate::delivery`]).

use bus::{HandlerError, Meta, Msg, State};
use domain::ids::UserId;
use messages::definition::BusMessage;
use messages::journal::v1::{
    ExportReady, PromptDue, RetentionPurgeDue, TeamInvitationCreated, UserCreated, UserDeleted,
    UserProfileUpdated,
};
use uuid::Uuid;

use crate::NotifierState;
use crate::delivery::{Request, deliver, idempotency_key};
use crate::suprsend::{
    DailyPromptData, ExportReadyData, Recipient, TeamInvitationData, UserProfile, WorkflowData,
    WorkflowTrigger,
};

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

fn require(field: &str, value: &str) -> Result<(), HandlerError> {
    if value.trim().is_empty() {
        return Err(HandlerError::permanent(format!("{field} is empty")));
    }
    Ok(())
}

/// `prompt.due` → the daily-prompt workflow for its recipient.
pub async fn prompt_due(
    State(state): State<NotifierState>,
    Msg(event): Msg<PromptDue>,
    meta: Meta,
) -> Result<(), HandlerError> {
    require("user_id", &event.user_id)?;
    require("email", &event.email)?;
    let recipient = Recipient {
        distinct_id: event.user_id.clone(),
        email: vec![event.email.clone()],
        name: non_empty(&event.name),
    };
    let workflow = state.workflows.daily_prompt.clone();
    trigger_workflow(
        &state,
        &meta,
        PromptDue::NAME,
        workflow,
        recipient,
        WorkflowData::DailyPrompt(DailyPromptData {
            prompt_id: event.prompt_id,
            prompt_text: event.prompt_text,
            team_id: non_empty(&event.team_id),
            team_name: non_empty(&event.team_name),
            local_date: event.local_date,
            scheduled_at: event.scheduled_at_ms,
            timezone: event.timezone,
        }),
    )
    .await
}

/// `team.invitation_created` → the team-invitation workflow to the invitee: their account
/// (`distinct_id` = user id) when the notifier knows the address, else the address itself.
pub async fn team_invitation_created(
    State(state): State<NotifierState>,
    Msg(event): Msg<TeamInvitationCreated>,
    meta: Meta,
) -> Result<(), HandlerError> {
    require("email", &event.email)?;
    let known: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT user_id, name FROM recipients WHERE lower(email) = lower($1)
          ORDER BY updated_at DESC LIMIT 1",
    )
    .bind(&event.email)
    .fetch_optional(&state.db)
    .await?;
    let (distinct_id, name) = match known {
        Some((user_id, name)) => (user_id.to_string(), Some(name)),
        None => (event.email.to_lowercase(), None),
    };
    let recipient = Recipient {
        distinct_id,
        email: vec![event.email.clone()],
        name,
    };
    let workflow = state.workflows.team_invitation.clone();
    trigger_workflow(
        &state,
        &meta,
        TeamInvitationCreated::NAME,
        workflow,
        recipient,
        WorkflowData::TeamInvitation(TeamInvitationData {
            team_invitation_id: event.team_invitation_id,
            team_id: event.team_id,
            team_name: event.team_name,
            role: event.role,
            invited_by_name: event.invited_by_name,
            expires_at: event.expires_at_ms,
        }),
    )
    .await
}

/// `export.ready` → the export-ready workflow to the user (address and name from the
/// notifier's directory when known; SuprSend's profile otherwise).
pub async fn export_ready(
    State(state): State<NotifierState>,
    Msg(event): Msg<ExportReady>,
    meta: Meta,
) -> Result<(), HandlerError> {
    let user_id = event.parse_user_id().map_err(HandlerError::permanent)?;
    require("download_url", &event.download_url)?;
    let known: Option<(String, String)> =
        sqlx::query_as("SELECT email, name FROM recipients WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&state.db)
            .await?;
    let (email, name) = match known {
        Some((email, name)) => (vec![email], Some(name)),
        None => (Vec::new(), None),
    };
    let recipient = Recipient {
        distinct_id: user_id.to_string(),
        email,
        name,
    };
    let workflow = state.workflows.export_ready.clone();
    trigger_workflow(
        &state,
        &meta,
        ExportReady::NAME,
        workflow,
        recipient,
        WorkflowData::ExportReady(ExportReadyData {
            export_id: event.export_id,
            download_url: event.download_url,
            expires_at: event.expires_at_ms,
            size_bytes: event.size_bytes,
        }),
    )
    .await
}

/// Trigger `workflow` for one recipient, keyed by the message (a redelivery reuses the key,
/// so SuprSend runs the workflow once).
async fn trigger_workflow(
    state: &NotifierState,
    meta: &Meta,
    message_name: &str,
    workflow: String,
    recipient: Recipient,
    data: WorkflowData,
) -> Result<(), HandlerError> {
    let key = idempotency_key(message_name, meta);
    let trigger = WorkflowTrigger {
        workflow,
        recipients: vec![recipient],
        data,
        idempotency_key: key.clone(),
    };
    deliver(state, meta, &key, &Request::Trigger(trigger)).await
}

/// A profile as the events carry it.
struct Profile {
    user_id: UserId,
    email: String,
    name: String,
    timezone: String,
    version: i64,
}

/// Record the profile (newer versions only) and identify the user to SuprSend — unless a
/// newer profile was seen already (a late, older event).
async fn identify(
    state: &NotifierState,
    meta: &Meta,
    message_name: &str,
    profile: Profile,
) -> Result<(), HandlerError> {
    require("email", &profile.email)?;
    let current: Option<i64> = sqlx::query_scalar(
        "INSERT INTO recipients (user_id, email, name, timezone, version)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id) DO UPDATE
            SET email = EXCLUDED.email, name = EXCLUDED.name, timezone = EXCLUDED.timezone,
                version = EXCLUDED.version, updated_at = now()
          WHERE recipients.version <= EXCLUDED.version
         RETURNING version",
    )
    .bind(profile.user_id)
    .bind(&profile.email)
    .bind(&profile.name)
    .bind(&profile.timezone)
    .bind(profile.version)
    .fetch_optional(&state.db)
    .await?;
    if current.is_none() {
        tracing::info!(user_id = %profile.user_id, version = profile.version, "a newer profile is known; not identified again");
        return Ok(());
    }
    let key = idempotency_key(message_name, meta);
    let request = Request::Identify {
        distinct_id: profile.user_id.to_string(),
        profile: UserProfile {
            email: vec![profile.email],
            name: profile.name,
            timezone: profile.timezone,
        },
    };
    deliver(state, meta, &key, &request).await
}

/// `user.created` → identify the new user.
pub async fn user_created(
    State(state): State<NotifierState>,
    Msg(event): Msg<UserCreated>,
    meta: Meta,
) -> Result<(), HandlerError> {
    let profile = Profile {
        user_id: event.parse_user_id().map_err(HandlerError::permanent)?,
        email: event.email,
        name: event.name,
        timezone: event.timezone,
        version: event.version.max(1),
    };
    identify(&state, &meta, UserCreated::NAME, profile).await
}

/// `user.profile_updated` → identify the user again with the new profile.
pub async fn user_profile_updated(
    State(state): State<NotifierState>,
    Msg(event): Msg<UserProfileUpdated>,
    meta: Meta,
) -> Result<(), HandlerError> {
    let profile = Profile {
        user_id: event.parse_user_id().map_err(HandlerError::permanent)?,
        email: event.email,
        name: event.name,
        timezone: event.timezone,
        version: event.version,
    };
    identify(&state, &meta, UserProfileUpdated::NAME, profile).await
}

/// `user.deleted` → forget the address.
pub async fn user_deleted(
    State(state): State<NotifierState>,
    Msg(event): Msg<UserDeleted>,
) -> Result<(), HandlerError> {
    let user_id = event.parse_user_id().map_err(HandlerError::permanent)?;
    sqlx::query("DELETE FROM recipients WHERE user_id = $1")
        .bind(user_id)
        .execute(&state.db)
        .await?;
    Ok(())
}

/// `retention.purge_due` → the bus's tables and old notifications (their attempts go with
/// them).
pub async fn purge_retention(
    State(state): State<NotifierState>,
    Msg(due): Msg<RetentionPurgeDue>,
) -> Result<(), HandlerError> {
    let bus_purged =
        bus::maintenance::purge(&state.db, bus::maintenance::BusRetention::default()).await?;
    let notifications = sqlx::query(
        "DELETE FROM notifications WHERE created_at < now() - make_interval(secs => $1)",
    )
    .bind(state.history_retention.as_secs_f64())
    .execute(&state.db)
    .await?
    .rows_affected();
    tracing::info!(
        cron_run_id = %due.cron_run_id,
        outbox_rows = bus_purged.outbox_rows,
        processed_messages = bus_purged.processed_messages,
        notifications,
        "retention purge done"
    );
    Ok(())
}
