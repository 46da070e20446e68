//! App teams against real Postgres and NATS: procedures, roles, invitations, the last-owner
//! rule under concurrency, changesets and events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Answer, TestApi, TestUser};
use messages::journal::v1::{TeamInvitationCreated, TeamMemberLeft};
use messages::sync::v1::{ChangeOp, Changeset};
use prost::Message;
use serde_json::{Value, json};

/// One recorded row change, decoded.
#[derive(Debug, Clone)]
struct Change {
    table: String,
    op: ChangeOp,
    row_id: String,
    version: i64,
    row: Value,
}

/// Every change recorded for `scope` (`team.<id>` / `user.<id>`), oldest first.
fn changes_for(sets: &[Changeset], scope: &str) -> Vec<Change> {
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

fn team_scope(team_id: &str) -> String {
    format!("team.{team_id}")
}

fn user_scope(user: &TestUser) -> String {
    format!("user.{}", user.user_id)
}

fn member_row_id(team_id: &str, user: &TestUser) -> String {
    format!("{team_id}:{}", user.user_id)
}

async fn create_team(api: &TestApi, owner: &TestUser, name: &str) -> String {
    let team = api
        .call(Some(owner), "teams/create", json!({ "name": name }))
        .await
        .ok();
    team["teamId"].as_str().unwrap().to_owned()
}

/// `inviter` invites `user` with `role`, and `user` accepts.
async fn add_member(api: &TestApi, inviter: &TestUser, team_id: &str, user: &TestUser, role: &str) {
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

/// `{userId: role}` of the active members, from `teams.get`.
async fn roles(api: &TestApi, viewer: &TestUser, team_id: &str) -> Vec<(String, String)> {
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

async fn owner_count(api: &TestApi, team_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM team_members
          WHERE team_id = $1::uuid AND role = 'owner' AND deleted_at IS NULL",
    )
    .bind(team_id)
    .fetch_one(&api.pool)
    .await
    .unwrap()
}

async fn outbox_payloads(api: &TestApi, name: &str) -> Vec<Vec<u8>> {
    api.emitted("EVENTS", &format!("events.{name}"))
        .await
        .into_iter()
        .filter(|message| message.name == name)
        .map(|message| message.payload)
        .collect()
}

fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.json);
    assert_eq!(answer.code(), code, "{}", answer.json);
}

#[tokio::test]
async fn create_list_get_rename_with_changesets_and_events() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;

    let team = api
        .call(
            Some(&alice),
            "teams/create",
            json!({ "name": "  Book club  " }),
        )
        .await
        .ok();
    let team_id = team["teamId"].as_str().unwrap().to_owned();
    assert_eq!(team["name"], "Book club");
    assert_eq!(team["role"], "owner");
    assert_eq!(team["version"], 1);
    assert_eq!(team["createdByUserId"], alice.user_id.to_string());
    assert!(team["createdAt"].as_i64().unwrap() > 1_600_000_000_000);
    assert!(team["deletedAt"].is_null());

    // The team row syncs to the team; the membership to the team and to alice.
    let sets = api.changesets().await;
    let in_team = changes_for(&sets, &team_scope(&team_id));
    assert_eq!(in_team.len(), 2, "{in_team:?}");
    assert_eq!(in_team[0].table, "teams");
    assert_eq!(in_team[0].op, ChangeOp::Insert);
    assert_eq!(in_team[0].row_id, team_id);
    assert_eq!(in_team[0].row["name"], "Book club");
    assert_eq!(in_team[1].table, "team_members");
    assert_eq!(in_team[1].op, ChangeOp::Insert);
    assert_eq!(in_team[1].row_id, member_row_id(&team_id, &alice));
    assert_eq!(in_team[1].row["role"], "owner");
    let in_alice = changes_for(&sets, &user_scope(&alice));
    let memberships: Vec<&Change> = in_alice
        .iter()
        .filter(|change| change.table == "team_members")
        .collect();
    assert_eq!(memberships.len(), 1);
    assert_eq!(memberships[0].row_id, member_row_id(&team_id, &alice));
    assert_eq!(memberships[0].row["teamId"], team_id.as_str());
    assert_eq!(memberships[0].row["userId"], alice.user_id.to_string());
    assert_eq!(api.events_named("team.member_joined").await, 1);

    // list: GET and POST, with the caller's role.
    create_team(&api, &alice, "Astronomy").await;
    let listed = api.query(Some(&alice), "teams/list", json!({})).await.ok();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|team| team["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Astronomy", "Book club"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["role"] == "owner")
    );
    let posted = api.call(Some(&alice), "teams/list", Value::Null).await.ok();
    assert_eq!(posted.as_array().unwrap().len(), 2);

    // get: the team with its members.
    let got = api
        .query(Some(&alice), "teams/get", json!({ "teamId": team_id }))
        .await
        .ok();
    assert_eq!(got["name"], "Book club");
    assert_eq!(got["role"], "owner");
    let members = got["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["userId"], alice.user_id.to_string());
    assert_eq!(members[0]["email"], "alice@example.com");
    assert_eq!(members[0]["name"], "alice");
    assert_eq!(members[0]["role"], "owner");
    assert!(members[0]["joinedAt"].as_i64().unwrap() > 1_600_000_000_000);

    // rename bumps the version and syncs the team row.
    let renamed = api
        .call(
            Some(&alice),
            "teams/rename",
            json!({ "teamId": team_id, "name": "Reading circle" }),
        )
        .await
        .ok();
    assert_eq!(renamed["name"], "Reading circle");
    assert_eq!(renamed["version"], 2);
    assert!(renamed["updatedAt"].as_i64() >= team["updatedAt"].as_i64());
    let in_team = changes_for(&api.changesets().await, &team_scope(&team_id));
    let last = in_team.last().unwrap();
    assert_eq!(last.table, "teams");
    assert_eq!(last.op, ChangeOp::Update);
    assert_eq!(last.version, 2);
    assert_eq!(last.row["name"], "Reading circle");
    api.stop().await;
}

#[tokio::test]
async fn inputs_are_validated_with_field_paths() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let team_id = create_team(&api, &alice, "Team").await;

    for name in [json!(""), json!("    "), json!("x".repeat(101))] {
        let answer = api
            .call(Some(&alice), "teams/create", json!({ "name": name }))
            .await;
        assert_error(&answer, 400, "BAD_REQUEST");
        assert_eq!(answer.issue_paths(), vec!["name"], "{}", answer.json);
    }
    let missing = api.call(Some(&alice), "teams/create", json!({})).await;
    assert_error(&missing, 400, "BAD_REQUEST");
    assert_eq!(missing.issue_paths(), vec!["name"]);

    let renamed = api
        .call(
            Some(&alice),
            "teams/rename",
            json!({ "teamId": team_id, "name": "" }),
        )
        .await;
    assert_error(&renamed, 400, "BAD_REQUEST");
    assert_eq!(renamed.issue_paths(), vec!["name"]);

    for email in ["not-an-email", "a@b", "two words@example.com", ""] {
        let answer = api
            .call(
                Some(&alice),
                "teams/invite",
                json!({ "teamId": team_id, "email": email }),
            )
            .await;
        assert_error(&answer, 400, "BAD_REQUEST");
        assert_eq!(answer.issue_paths(), vec!["email"], "{email}");
    }
    // Owners are never invited: the role is member or admin.
    let owner_invite = api
        .call(
            Some(&alice),
            "teams/invite",
            json!({ "teamId": team_id, "email": "x@example.com", "role": "owner" }),
        )
        .await;
    assert_error(&owner_invite, 400, "BAD_REQUEST");
    assert_eq!(owner_invite.issue_paths(), vec!["role"]);

    let bad_role = api
        .call(
            Some(&alice),
            "teams/changeRole",
            json!({ "teamId": team_id, "userId": alice.user_id, "role": "boss" }),
        )
        .await;
    assert_error(&bad_role, 400, "BAD_REQUEST");
    assert_eq!(bad_role.issue_paths(), vec!["role"]);

    let bad_id = api
        .query(Some(&alice), "teams/get", json!({ "teamId": "nope" }))
        .await;
    assert_error(&bad_id, 400, "BAD_REQUEST");
    assert_eq!(bad_id.issue_paths(), vec!["teamId"]);

    let unknown_field = api
        .call(
            Some(&alice),
            "teams/create",
            json!({ "name": "ok", "color": "red" }),
        )
        .await;
    assert_error(&unknown_field, 400, "BAD_REQUEST");

    // POST-only procedures refuse GET; everything needs a session.
    let get_create = api
        .query(Some(&alice), "teams/create", json!({ "name": "x" }))
        .await;
    assert_error(&get_create, 405, "METHOD_NOT_SUPPORTED");
    let anonymous = api.query(None, "teams/list", json!({})).await;
    assert_error(&anonymous, 401, "UNAUTHORIZED");

    // Nothing was written by the refused calls.
    let teams: i64 = sqlx::query_scalar("SELECT count(*) FROM teams")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(teams, 1);
    api.stop().await;
}

#[tokio::test]
async fn invitations_accept_decline_refresh_and_expire() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let bob = api.login("bob@example.com").await;
    let carol = api.login("carol@example.com").await;
    let team_id = create_team(&api, &alice, "Writers").await;

    // The address is matched case-insensitively and stored lowercased.
    let invitation = api
        .call(
            Some(&alice),
            "teams/invite",
            json!({ "teamId": team_id, "email": " Bob@Example.COM " }),
        )
        .await
        .ok();
    let invitation_id = invitation["teamInvitationId"].as_str().unwrap().to_owned();
    assert_eq!(invitation["email"], "bob@example.com");
    assert_eq!(invitation["role"], "member");
    assert_eq!(invitation["status"], "pending");
    assert_eq!(invitation["teamId"], team_id.as_str());
    assert_eq!(invitation["teamName"], "Writers");
    assert_eq!(invitation["invitedByUserId"], alice.user_id.to_string());
    assert_eq!(invitation["invitedByName"], "alice");
    let lifetime =
        invitation["expiresAt"].as_i64().unwrap() - invitation["createdAt"].as_i64().unwrap();
    assert!((lifetime - 14 * 86_400_000).abs() < 5_000, "{lifetime}");

    // The event for the notifier, in the same transaction.
    assert_eq!(api.events_named("team.invitation_created").await, 1);
    let payloads = outbox_payloads(&api, "team.invitation_created").await;
    let event = TeamInvitationCreated::decode(payloads[0].as_slice()).unwrap();
    assert_eq!(event.team_invitation_id, invitation_id);
    assert_eq!(event.team_id, team_id);
    assert_eq!(event.team_name, "Writers");
    assert_eq!(event.email, "bob@example.com");
    assert_eq!(event.role, "member");
    assert_eq!(event.invited_by_user_id, alice.user_id.to_string());
    assert_eq!(event.invited_by_name, "alice");
    assert_eq!(
        event.expires_at_ms,
        invitation["expiresAt"].as_i64().unwrap()
    );

    // Only the addressee finds and answers it.
    let for_bob = api
        .query(Some(&bob), "teams/listInvitations", json!({}))
        .await
        .ok();
    assert_eq!(for_bob.as_array().unwrap().len(), 1);
    assert_eq!(for_bob[0]["teamInvitationId"], invitation_id.as_str());
    assert_eq!(for_bob[0]["teamName"], "Writers");
    let for_carol = api
        .query(Some(&carol), "teams/listInvitations", json!({}))
        .await
        .ok();
    assert_eq!(for_carol, json!([]));
    let stolen = api
        .call(
            Some(&carol),
            "teams/acceptInvitation",
            json!({ "teamInvitationId": invitation_id }),
        )
        .await;
    assert_error(&stolen, 404, "NOT_FOUND");
    let declined_by_other = api
        .call(
            Some(&carol),
            "teams/declineInvitation",
            json!({ "teamInvitationId": invitation_id }),
        )
        .await;
    assert_error(&declined_by_other, 404, "NOT_FOUND");

    // An address nobody has verified is not proof of being its owner.
    let set_verified = |verified: bool| {
        sqlx::query("UPDATE users SET email_verified = $2 WHERE user_id = $1")
            .bind(bob.user_id)
            .bind(verified)
            .execute(&api.pool)
    };
    set_verified(false).await.unwrap();
    let unverified = api
        .call(
            Some(&bob),
            "teams/acceptInvitation",
            json!({ "teamInvitationId": invitation_id }),
        )
        .await;
    assert_error(&unverified, 403, "FORBIDDEN");
    set_verified(true).await.unwrap();

    let joined = api
        .call(
            Some(&bob),
            "teams/acceptInvitation",
            json!({ "teamInvitationId": invitation_id }),
        )
        .await
        .ok();
    assert_eq!(joined["teamId"], team_id.as_str());
    assert_eq!(joined["name"], "Writers");
    assert_eq!(joined["role"], "member");
    assert_eq!(api.events_named("team.member_joined").await, 2);
    let bobs_teams = api.query(Some(&bob), "teams/list", json!({})).await.ok();
    assert_eq!(bobs_teams.as_array().unwrap().len(), 1);
    assert_eq!(bobs_teams[0]["role"], "member");
    assert_eq!(
        roles(&api, &bob, &team_id).await.len(),
        2,
        "bob sees both members"
    );
    // Bob's membership syncs to the team and to bob.
    let sets = api.changesets().await;
    for scope in [team_scope(&team_id), user_scope(&bob)] {
        let changes = changes_for(&sets, &scope);
        let bob_row = changes
            .iter()
            .find(|change| change.row_id == member_row_id(&team_id, &bob))
            .unwrap_or_else(|| panic!("no membership change in {scope}"));
        assert_eq!(bob_row.table, "team_members");
        assert_eq!(bob_row.op, ChangeOp::Insert);
        assert_eq!(bob_row.row["role"], "member");
    }

    let again = api
        .call(
            Some(&bob),
            "teams/acceptInvitation",
            json!({ "teamInvitationId": invitation_id }),
        )
        .await;
    assert_error(&again, 409, "INVITATION_NOT_PENDING");
    assert_eq!(
        api.query(Some(&bob), "teams/listInvitations", json!({}))
            .await
            .ok(),
        json!([])
    );
    let member_again = api
        .call(
            Some(&alice),
            "teams/invite",
            json!({ "teamId": team_id, "email": "BOB@example.com" }),
        )
        .await;
    assert_error(&member_again, 409, "ALREADY_MEMBER");

    // A second invitation to a pending address refreshes the first (same id, new role).
    let first = api
        .call(
            Some(&alice),
            "teams/invite",
            json!({ "teamId": team_id, "email": "carol@example.com" }),
        )
        .await
        .ok();
    let second = api
        .call(
            Some(&alice),
            "teams/invite",
            json!({ "teamId": team_id, "email": "Carol@example.com", "role": "admin" }),
        )
        .await
        .ok();
    assert_eq!(first["teamInvitationId"], second["teamInvitationId"]);
    assert_eq!(second["role"], "admin");
    assert_eq!(api.events_named("team.invitation_created").await, 3);
    let for_carol = api
        .query(Some(&carol), "teams/listInvitations", json!({}))
        .await
        .ok();
    assert_eq!(for_carol.as_array().unwrap().len(), 1);
    assert_eq!(for_carol[0]["role"], "admin");

    let declined = api
        .call(
            Some(&carol),
            "teams/declineInvitation",
            json!({ "teamInvitationId": second["teamInvitationId"] }),
        )
        .await
        .ok();
    assert_eq!(declined["status"], "declined");
    assert!(declined["respondedAt"].as_i64().is_some());
    let accept_declined = api
        .call(
            Some(&carol),
            "teams/acceptInvitation",
            json!({ "teamInvitationId": second["teamInvitationId"] }),
        )
        .await;
    assert_error(&accept_declined, 409, "INVITATION_NOT_PENDING");
    assert_eq!(
        api.query(Some(&carol), "teams/listInvitations", json!({}))
            .await
            .ok(),
        json!([])
    );
    assert_eq!(roles(&api, &alice, &team_id).await.len(), 2);

    // An expired invitation is neither listed nor accepted.
    let dave = api.login("dave@example.com").await;
    let for_dave = api
        .call(
            Some(&alice),
            "teams/invite",
            json!({ "teamId": team_id, "email": "dave@example.com" }),
        )
        .await
        .ok();
    sqlx::query(
        "UPDATE team_invitations SET expires_at = now() - interval '1 minute'
          WHERE team_invitation_id = $1::uuid",
    )
    .bind(for_dave["teamInvitationId"].as_str().unwrap())
    .execute(&api.pool)
    .await
    .unwrap();
    assert_eq!(
        api.query(Some(&dave), "teams/listInvitations", json!({}))
            .await
            .ok(),
        json!([])
    );
    let expired = api
        .call(
            Some(&dave),
            "teams/acceptInvitation",
            json!({ "teamInvitationId": for_dave["teamInvitationId"] }),
        )
        .await;
    assert_error(&expired, 410, "INVITATION_EXPIRED");
    assert_eq!(
        api.query(Some(&dave), "teams/list", json!({})).await.ok(),
        json!([])
    );
    // Re-inviting refreshes the expired one.
    let refreshed = api
        .call(
            Some(&alice),
            "teams/invite",
            json!({ "teamId": team_id, "email": "dave@example.com" }),
        )
        .await
        .ok();
    assert_eq!(refreshed["teamInvitationId"], for_dave["teamInvitationId"]);
    api.call(
        Some(&dave),
        "teams/acceptInvitation",
        json!({ "teamInvitationId": refreshed["teamInvitationId"] }),
    )
    .await
    .ok();
    assert_eq!(roles(&api, &alice, &team_id).await.len(), 3);
    api.stop().await;
}

#[tokio::test]
async fn roles_are_enforced_and_outsiders_see_nothing() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await; // owner
    let bob = api.login("bob@example.com").await; // member
    let carol = api.login("carol@example.com").await; // admin
    let erin = api.login("erin@example.com").await; // admin
    let dave = api.login("dave@example.com").await; // outsider
    let team_id = create_team(&api, &alice, "Lab").await;
    add_member(&api, &alice, &team_id, &bob, "member").await;
    add_member(&api, &alice, &team_id, &carol, "admin").await;
    add_member(&api, &alice, &team_id, &erin, "admin").await;

    // An outsider, and an unknown team, get NOT_FOUND everywhere.
    let unknown = uuid::Uuid::new_v4().to_string();
    for id in [&team_id, &unknown] {
        let got = api
            .query(Some(&dave), "teams/get", json!({ "teamId": id }))
            .await;
        assert_error(&got, 404, "NOT_FOUND");
        let renamed = api
            .call(
                Some(&dave),
                "teams/rename",
                json!({ "teamId": id, "name": "Mine" }),
            )
            .await;
        assert_error(&renamed, 404, "NOT_FOUND");
        let invited = api
            .call(
                Some(&dave),
                "teams/invite",
                json!({ "teamId": id, "email": "x@example.com" }),
            )
            .await;
        assert_error(&invited, 404, "NOT_FOUND");
        let left = api
            .call(Some(&dave), "teams/leave", json!({ "teamId": id }))
            .await;
        assert_error(&left, 404, "NOT_FOUND");
        let changed = api
            .call(
                Some(&dave),
                "teams/changeRole",
                json!({ "teamId": id, "userId": dave.user_id, "role": "owner" }),
            )
            .await;
        assert_error(&changed, 404, "NOT_FOUND");
    }

    // A member reads but does not manage.
    assert_eq!(roles(&api, &bob, &team_id).await.len(), 4);
    let renamed = api
        .call(
            Some(&bob),
            "teams/rename",
            json!({ "teamId": team_id, "name": "Bob's" }),
        )
        .await;
    assert_error(&renamed, 403, "FORBIDDEN");
    let invited = api
        .call(
            Some(&bob),
            "teams/invite",
            json!({ "teamId": team_id, "email": "x@example.com" }),
        )
        .await;
    assert_error(&invited, 403, "FORBIDDEN");
    let promoted = api
        .call(
            Some(&bob),
            "teams/changeRole",
            json!({ "teamId": team_id, "userId": bob.user_id, "role": "admin" }),
        )
        .await;
    assert_error(&promoted, 403, "FORBIDDEN");
    let removed = api
        .call(
            Some(&bob),
            "teams/removeMember",
            json!({ "teamId": team_id, "userId": carol.user_id }),
        )
        .await;
    assert_error(&removed, 403, "FORBIDDEN");

    // An admin renames, invites members, moves members and admins, never touches owners.
    api.call(
        Some(&carol),
        "teams/rename",
        json!({ "teamId": team_id, "name": "Lab 2" }),
    )
    .await
    .ok();
    api.call(
        Some(&carol),
        "teams/invite",
        json!({ "teamId": team_id, "email": "frank@example.com" }),
    )
    .await
    .ok();
    let admin_invite = api
        .call(
            Some(&carol),
            "teams/invite",
            json!({ "teamId": team_id, "email": "gina@example.com", "role": "admin" }),
        )
        .await;
    assert_error(&admin_invite, 403, "FORBIDDEN");
    let demote_owner = api
        .call(
            Some(&carol),
            "teams/changeRole",
            json!({ "teamId": team_id, "userId": alice.user_id, "role": "member" }),
        )
        .await;
    assert_error(&demote_owner, 403, "FORBIDDEN");
    let grant_owner = api
        .call(
            Some(&carol),
            "teams/changeRole",
            json!({ "teamId": team_id, "userId": bob.user_id, "role": "owner" }),
        )
        .await;
    assert_error(&grant_owner, 403, "FORBIDDEN");
    let self_owner = api
        .call(
            Some(&carol),
            "teams/changeRole",
            json!({ "teamId": team_id, "userId": carol.user_id, "role": "owner" }),
        )
        .await;
    assert_error(&self_owner, 403, "FORBIDDEN");
    let remove_owner = api
        .call(
            Some(&carol),
            "teams/removeMember",
            json!({ "teamId": team_id, "userId": alice.user_id }),
        )
        .await;
    assert_error(&remove_owner, 403, "FORBIDDEN");
    let remove_admin = api
        .call(
            Some(&carol),
            "teams/removeMember",
            json!({ "teamId": team_id, "userId": erin.user_id }),
        )
        .await;
    assert_error(&remove_admin, 403, "FORBIDDEN");

    let bob_admin = api
        .call(
            Some(&carol),
            "teams/changeRole",
            json!({ "teamId": team_id, "userId": bob.user_id, "role": "admin" }),
        )
        .await
        .ok();
    assert_eq!(bob_admin["role"], "admin");
    assert_eq!(bob_admin["version"], 2);
    let bob_member = api
        .call(
            Some(&carol),
            "teams/changeRole",
            json!({ "teamId": team_id, "userId": bob.user_id, "role": "member" }),
        )
        .await
        .ok();
    assert_eq!(bob_member["role"], "member");
    assert_eq!(bob_member["version"], 3);
    let sets = api.changesets().await;
    let bob_updates: Vec<Change> = changes_for(&sets, &user_scope(&bob))
        .into_iter()
        .filter(|change| change.op == ChangeOp::Update)
        .collect();
    assert_eq!(bob_updates.len(), 2);
    assert_eq!(bob_updates[1].version, 3);
    assert_eq!(bob_updates[1].row["role"], "member");

    // An admin removes a member: a tombstone to the team and to the removed user.
    let tombstone = api
        .call(
            Some(&carol),
            "teams/removeMember",
            json!({ "teamId": team_id, "userId": bob.user_id }),
        )
        .await
        .ok();
    assert!(tombstone["deletedAt"].as_i64().is_some());
    let sets = api.changesets().await;
    for scope in [team_scope(&team_id), user_scope(&bob)] {
        let last = changes_for(&sets, &scope).pop().unwrap();
        assert_eq!(last.table, "team_members");
        assert_eq!(last.op, ChangeOp::Delete);
        assert_eq!(last.row_id, member_row_id(&team_id, &bob));
        assert!(last.row["deletedAt"].as_i64().is_some(), "{scope}");
    }
    let left = outbox_payloads(&api, "team.member_left").await;
    assert_eq!(left.len(), 1);
    let event = TeamMemberLeft::decode(left[0].as_slice()).unwrap();
    assert_eq!(event.user_id, bob.user_id.to_string());
    assert_eq!(event.reason, "removed");
    assert_eq!(event.removed_by_user_id, carol.user_id.to_string());
    assert_eq!(
        api.query(Some(&bob), "teams/list", json!({})).await.ok(),
        json!([])
    );
    let gone = api
        .query(Some(&bob), "teams/get", json!({ "teamId": team_id }))
        .await;
    assert_error(&gone, 404, "NOT_FOUND");

    // Owners remove admins; rejoining revives the membership with the invited role.
    api.call(
        Some(&alice),
        "teams/removeMember",
        json!({ "teamId": team_id, "userId": erin.user_id }),
    )
    .await
    .ok();
    add_member(&api, &alice, &team_id, &bob, "admin").await;
    let sets = api.changesets().await;
    let revived = changes_for(&sets, &user_scope(&bob)).pop().unwrap();
    assert_eq!(revived.row_id, member_row_id(&team_id, &bob));
    assert_eq!(revived.op, ChangeOp::Update);
    assert!(revived.row["deletedAt"].is_null());
    assert_eq!(revived.row["role"], "admin");
    assert_eq!(revived.version, 5);
    let expected = {
        let mut expected = vec![
            (alice.user_id.to_string(), "owner".to_owned()),
            (bob.user_id.to_string(), "admin".to_owned()),
            (carol.user_id.to_string(), "admin".to_owned()),
        ];
        expected.sort();
        expected
    };
    assert_eq!(roles(&api, &alice, &team_id).await, expected);
    api.stop().await;
}

#[tokio::test]
async fn the_last_owner_cannot_leave_or_be_demoted_and_the_last_member_closes_the_team() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let bob = api.login("bob@example.com").await;
    let team_id = create_team(&api, &alice, "Choir").await;
    add_member(&api, &alice, &team_id, &bob, "member").await;

    let leave = api
        .call(Some(&alice), "teams/leave", json!({ "teamId": team_id }))
        .await;
    assert_error(&leave, 409, "LAST_OWNER");
    assert_eq!(leave.json["defined"], true);
    let demote = api
        .call(
            Some(&alice),
            "teams/changeRole",
            json!({ "teamId": team_id, "userId": alice.user_id, "role": "admin" }),
        )
        .await;
    assert_error(&demote, 409, "LAST_OWNER");
    let remove_self = api
        .call(
            Some(&alice),
            "teams/removeMember",
            json!({ "teamId": team_id, "userId": alice.user_id }),
        )
        .await;
    assert_error(&remove_self, 400, "BAD_REQUEST");
    assert_eq!(owner_count(&api, &team_id).await, 1);

    // Hand over, then leave.
    api.call(
        Some(&alice),
        "teams/changeRole",
        json!({ "teamId": team_id, "userId": bob.user_id, "role": "owner" }),
    )
    .await
    .ok();
    let left = api
        .call(Some(&alice), "teams/leave", json!({ "teamId": team_id }))
        .await
        .ok();
    assert_eq!(left["teamDeleted"], false);
    assert_eq!(left["userId"], alice.user_id.to_string());
    assert!(left["deletedAt"].as_i64().is_some());
    let payloads = outbox_payloads(&api, "team.member_left").await;
    let event = TeamMemberLeft::decode(payloads[0].as_slice()).unwrap();
    assert_eq!(event.reason, "left");
    assert_eq!(event.removed_by_user_id, "");
    assert_eq!(
        roles(&api, &bob, &team_id).await,
        vec![(bob.user_id.to_string(), "owner".to_owned())]
    );

    // The only member leaving takes the team along (and its pending invitations).
    api.call(
        Some(&bob),
        "teams/invite",
        json!({ "teamId": team_id, "email": "carol@example.com" }),
    )
    .await
    .ok();
    let closed = api
        .call(Some(&bob), "teams/leave", json!({ "teamId": team_id }))
        .await
        .ok();
    assert_eq!(closed["teamDeleted"], true);
    let sets = api.changesets().await;
    let team_tombstone = changes_for(&sets, &team_scope(&team_id))
        .into_iter()
        .rfind(|change| change.table == "teams")
        .unwrap();
    assert_eq!(team_tombstone.op, ChangeOp::Delete);
    assert!(team_tombstone.row["deletedAt"].as_i64().is_some());
    let carol = api.login("carol@example.com").await;
    assert_eq!(
        api.query(Some(&carol), "teams/listInvitations", json!({}))
            .await
            .ok(),
        json!([])
    );
    let status: String = sqlx::query_scalar(
        "SELECT status FROM team_invitations WHERE team_id = $1::uuid AND email = 'carol@example.com'",
    )
    .bind(&team_id)
    .fetch_one(&api.pool)
    .await
    .unwrap();
    assert_eq!(status, "revoked");
    let gone = api
        .query(Some(&bob), "teams/get", json!({ "teamId": team_id }))
        .await;
    assert_error(&gone, 404, "NOT_FOUND");
    api.stop().await;
}

#[tokio::test]
async fn concurrent_demotions_and_departures_never_leave_a_team_ownerless() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let bob = api.login("bob@example.com").await;
    let carol = api.login("carol@example.com").await;

    for round in 0..4 {
        // Two owners and a member; each owner demotes the other at the same time.
        let team_id = create_team(&api, &alice, &format!("Demote {round}")).await;
        add_member(&api, &alice, &team_id, &bob, "admin").await;
        add_member(&api, &alice, &team_id, &carol, "member").await;
        api.call(
            Some(&alice),
            "teams/changeRole",
            json!({ "teamId": team_id, "userId": bob.user_id, "role": "owner" }),
        )
        .await
        .ok();
        assert_eq!(owner_count(&api, &team_id).await, 2);
        let (first, second) = if round % 2 == 0 {
            // Each demotes the other.
            tokio::join!(
                api.call(
                    Some(&alice),
                    "teams/changeRole",
                    json!({ "teamId": team_id, "userId": bob.user_id, "role": "member" }),
                ),
                api.call(
                    Some(&bob),
                    "teams/changeRole",
                    json!({ "teamId": team_id, "userId": alice.user_id, "role": "member" }),
                )
            )
        } else {
            // Each demotes themselves.
            tokio::join!(
                api.call(
                    Some(&alice),
                    "teams/changeRole",
                    json!({ "teamId": team_id, "userId": alice.user_id, "role": "admin" }),
                ),
                api.call(
                    Some(&bob),
                    "teams/changeRole",
                    json!({ "teamId": team_id, "userId": bob.user_id, "role": "admin" }),
                )
            )
        };
        let outcomes = [&first, &second];
        let succeeded = outcomes.iter().filter(|a| a.status == 200).count();
        assert_eq!(succeeded, 1, "{} / {}", first.json, second.json);
        let refused = outcomes.iter().find(|a| a.status != 200).unwrap();
        // Serialised, the loser is either the last owner or no longer an owner at all.
        assert!(
            ["LAST_OWNER", "FORBIDDEN"].contains(&refused.code()),
            "{}",
            refused.json
        );
        assert_eq!(owner_count(&api, &team_id).await, 1, "round {round}");

        // Two owners leave at the same time while a member stays.
        let team_id = create_team(&api, &alice, &format!("Leave {round}")).await;
        add_member(&api, &alice, &team_id, &bob, "admin").await;
        add_member(&api, &alice, &team_id, &carol, "member").await;
        api.call(
            Some(&alice),
            "teams/changeRole",
            json!({ "teamId": team_id, "userId": bob.user_id, "role": "owner" }),
        )
        .await
        .ok();
        let (first, second) = tokio::join!(
            api.call(Some(&alice), "teams/leave", json!({ "teamId": team_id })),
            api.call(Some(&bob), "teams/leave", json!({ "teamId": team_id }))
        );
        let outcomes = [&first, &second];
        let succeeded = outcomes.iter().filter(|a| a.status == 200).count();
        assert_eq!(succeeded, 1, "{} / {}", first.json, second.json);
        let refused = outcomes.iter().find(|a| a.status != 200).unwrap();
        assert_error(refused, 409, "LAST_OWNER");
        assert_eq!(owner_count(&api, &team_id).await, 1, "round {round}");
        assert_eq!(roles(&api, &carol, &team_id).await.len(), 2);
    }
    api.stop().await;
}

#[tokio::test]
async fn account_deletion_leaves_every_team() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let bob = api.login("bob@example.com").await;
    let shared = create_team(&api, &alice, "Shared").await;
    add_member(&api, &alice, &shared, &bob, "member").await;
    let solo = create_team(&api, &bob, "Solo").await;

    // Bob leaves both: his membership in the shared team ends, his solo team closes.
    api.call(Some(&bob), "users/delete", json!({})).await.ok();
    assert_eq!(
        roles(&api, &alice, &shared).await,
        vec![(alice.user_id.to_string(), "owner".to_owned())]
    );
    let solo_deleted: bool =
        sqlx::query_scalar("SELECT deleted_at IS NOT NULL FROM teams WHERE team_id = $1::uuid")
            .bind(&solo)
            .fetch_one(&api.pool)
            .await
            .unwrap();
    assert!(solo_deleted);
    let sets = api.changesets().await;
    let in_bob = changes_for(&sets, &user_scope(&bob));
    for team_id in [&shared, &solo] {
        let tombstone = in_bob
            .iter()
            .rfind(|change| change.row_id == member_row_id(team_id, &bob))
            .unwrap();
        assert_eq!(tombstone.op, ChangeOp::Delete);
        let in_team = changes_for(&sets, &team_scope(team_id));
        assert!(
            in_team
                .iter()
                .any(|change| change.row_id == member_row_id(team_id, &bob)
                    && change.op == ChangeOp::Delete)
        );
    }
    let solo_tombstone = changes_for(&sets, &team_scope(&solo))
        .into_iter()
        .rfind(|change| change.table == "teams")
        .unwrap();
    assert_eq!(solo_tombstone.op, ChangeOp::Delete);
    assert_eq!(api.events_named("team.member_left").await, 2);

    // The last owner of a team with members must hand it over first.
    let carol = api.login("carol@example.com").await;
    add_member(&api, &alice, &shared, &carol, "member").await;
    let refused = api.call(Some(&alice), "users/delete", json!({})).await;
    assert_error(&refused, 409, "LAST_OWNER");
    assert_eq!(owner_count(&api, &shared).await, 1);
    api.stop().await;
}

/// Issue 15: ownership and access changes went through with any old session. Making or
/// unmaking an owner and removing an admin now need a fresh one, like the other sensitive
/// procedures; ordinary role changes and removals do not.
#[tokio::test]
async fn ownership_changes_and_removing_an_admin_need_a_fresh_session() {
    let api = TestApi::start().await;
    let owner = api.login("fresh-owner@example.com").await;
    let co_owner = api.login("fresh-co-owner@example.com").await;
    let admin = api.login("fresh-admin@example.com").await;
    let member = api.login("fresh-member@example.com").await;
    let other = api.login("fresh-other@example.com").await;
    let team_id = api
        .team_with(
            &owner,
            &[
                (&co_owner, "admin"),
                (&admin, "admin"),
                (&member, "member"),
                (&other, "member"),
            ],
        )
        .await;
    api.call(
        Some(&owner),
        "teams/changeRole",
        json!({ "teamId": team_id, "userId": co_owner.user_id, "role": "owner" }),
    )
    .await
    .ok();
    sqlx::query("UPDATE sessions SET created_at = now() - interval '2 days' WHERE user_id = $1")
        .bind(owner.user_id)
        .execute(&api.pool)
        .await
        .unwrap();
    api.forget_cached_sessions();
    let call = |procedure: &'static str, user: &TestUser, role: Option<&str>| {
        let mut input = json!({ "teamId": team_id, "userId": user.user_id });
        if let Some(role) = role {
            input["role"] = json!(role);
        }
        api.call(Some(&owner), procedure, input)
    };
    for stale in [
        call("teams/changeRole", &member, Some("owner")).await,
        call("teams/changeRole", &co_owner, Some("admin")).await,
        call("teams/removeMember", &admin, None).await,
        call("teams/removeMember", &co_owner, None).await,
    ] {
        assert_eq!(stale.status, 403);
        assert_eq!(stale.code(), "SESSION_NOT_FRESH");
    }
    // Not sensitive: between member and admin, and removing a member.
    call("teams/changeRole", &member, Some("admin")).await.ok();
    call("teams/changeRole", &member, Some("member")).await.ok();
    call("teams/removeMember", &other, None).await.ok();
    // The co-owner's fresh session can.
    let promoted = api
        .call(
            Some(&co_owner),
            "teams/changeRole",
            json!({ "teamId": team_id, "userId": member.user_id, "role": "owner" }),
        )
        .await
        .ok();
    assert_eq!(promoted["role"], "owner");
    api.stop().await;
}
