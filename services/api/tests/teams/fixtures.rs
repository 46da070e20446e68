//! Helpers shared by the team tests: creating teams, adding members, reading roles and the
//! changes and events a team procedure records.

use messages::sync::v1::{ChangeOp, Changeset};
use serde::Serialize;
use serde_json::{Value, json};

use crate::common::{Answer, TestApi, TestUser};

/// One recorded row change, decoded.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) table: String,
    pub(crate) op: ChangeOp,
    pub(crate) row_id: String,
    pub(crate) version: i64,
    pub(crate) row: Value,
}

/// Every change recorded for `scope` (`team.<id>` / `user.<id>`), oldest first.
pub(crate) fn changes_for(sets: &[Changeset], scope: &str) -> Vec<Change> {
    sets.iter()
        .filter(|set| set.scope == scope)
        .flat_map(|set| set.changes.iter())
        .map(|change| Change {
            table: change.table.clone(),
            op: ChangeOp::try_from(change.op).unwrap(),
            row_id: change.row_id.clone(),
            version: change.version,
            row: serde_json::from_slice(&change.row_json).unwrap(),
        })
        .collect()
}

pub(crate) fn team_scope(team_id: &str) -> String {
    format!("team.{team_id}")
}

pub(crate) fn user_scope(user: &TestUser) -> String {
    format!("user.{}", user.user_id)
}

pub(crate) fn member_row_id(team_id: &str, user: &TestUser) -> String {
    format!("{team_id}:{}", user.user_id)
}

pub(crate) async fn create_team(api: &TestApi, owner: &TestUser, name: &str) -> String {
    let team = api
        .call(Some(owner), "teams/create", json!({ "name": name }))
        .await
        .ok();
    team["teamId"].as_str().unwrap().to_owned()
}

/// `inviter` invites `user` with `role`, and `user` accepts.
pub(crate) async fn add_member(
    api: &TestApi,
    inviter: &TestUser,
    team_id: &str,
    user: &TestUser,
    role: &str,
) {
    let invitation = api
        .call(
            Some(inviter),
            "teams/invite",
            json!({ "teamId": team_id, "email": user.email, "role": role }),
        )
        .await
        .ok();
    let joined = api
        .call(
            Some(user),
            "teams/acceptInvitation",
            json!({ "teamInvitationId": invitation["teamInvitationId"] }),
        )
        .await
        .ok();
    assert_eq!(joined["role"], role);
}

/// `by` invites `email` to `team_id` (with the default role).
pub(crate) async fn invite(api: &TestApi, by: &TestUser, team_id: &str, email: &str) -> Answer {
    api.call(
        Some(by),
        "teams/invite",
        json!({ "teamId": team_id, "email": email }),
    )
    .await
}

/// `user` accepts the invitation `invitation_id`.
pub(crate) async fn accept_invitation(
    api: &TestApi,
    user: &TestUser,
    invitation_id: &impl Serialize,
) -> Answer {
    answer_invitation(api, user, "teams/acceptInvitation", invitation_id).await
}

/// `user` declines the invitation `invitation_id`.
pub(crate) async fn decline_invitation(
    api: &TestApi,
    user: &TestUser,
    invitation_id: &impl Serialize,
) -> Answer {
    answer_invitation(api, user, "teams/declineInvitation", invitation_id).await
}

async fn answer_invitation(
    api: &TestApi,
    user: &TestUser,
    procedure: &str,
    invitation_id: &impl Serialize,
) -> Answer {
    let input = json!({ "teamInvitationId": invitation_id });
    api.call(Some(user), procedure, input).await
}

/// The invitations `user` may answer, from `teams.listInvitations`.
pub(crate) async fn invitations_of(api: &TestApi, user: &TestUser) -> Value {
    api.query(Some(user), "teams/listInvitations", json!({}))
        .await
        .ok()
}

/// `by` gives `user` the role `role` in `team_id`.
pub(crate) async fn change_role(
    api: &TestApi,
    by: &TestUser,
    team_id: &str,
    user: &TestUser,
    role: &str,
) -> Answer {
    api.call(
        Some(by),
        "teams/changeRole",
        json!({ "teamId": team_id, "userId": user.user_id, "role": role }),
    )
    .await
}

/// `by` removes `user` from `team_id`.
pub(crate) async fn remove_member(
    api: &TestApi,
    by: &TestUser,
    team_id: &str,
    user: &TestUser,
) -> Answer {
    api.call(
        Some(by),
        "teams/removeMember",
        json!({ "teamId": team_id, "userId": user.user_id }),
    )
    .await
}

/// `user` leaves `team_id`.
pub(crate) async fn leave(api: &TestApi, user: &TestUser, team_id: &str) -> Answer {
    api.call(Some(user), "teams/leave", json!({ "teamId": team_id }))
        .await
}

/// `{userId: role}` of the active members, from `teams.get`.
pub(crate) async fn roles(
    api: &TestApi,
    viewer: &TestUser,
    team_id: &str,
) -> Vec<(String, String)> {
    let team = api
        .query(Some(viewer), "teams/get", json!({ "teamId": team_id }))
        .await
        .ok();
    let mut roles: Vec<(String, String)> = team["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| {
            (
                member["userId"].as_str().unwrap().to_owned(),
                member["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    roles.sort();
    roles
}

pub(crate) async fn outbox_payloads(api: &TestApi, name: &str) -> Vec<Vec<u8>> {
    api.emitted("EVENTS", &format!("events.{name}"))
        .await
        .into_iter()
        .filter(|message| message.name == name)
        .map(|message| message.payload)
        .collect()
}

pub(crate) fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.json);
    assert_eq!(answer.code(), code, "{}", answer.json);
}
