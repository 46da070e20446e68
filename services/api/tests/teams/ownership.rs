//! Owners and leaving: a team never ends up without an owner; ownership changes need a
//! fresh session; account deletion leaves every team.

use messages::journal::v1::TeamMemberLeft;
use messages::sync::v1::ChangeOp;
use prost::Message;
use serde_json::json;

use crate::common::{TestApi, TestUser};
use crate::fixtures::{
    add_member, assert_error, change_role, changes_for, create_team, invitations_of, invite, leave,
    member_row_id, outbox_payloads, remove_member, roles, team_scope, user_scope,
};

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

#[tokio::test]
async fn the_last_owner_cannot_leave_or_be_demoted_and_the_last_member_closes_the_team() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let bob = api.login("bob@example.com").await;
    let team_id = create_team(&api, &alice, "Choir").await;
    add_member(&api, &alice, &team_id, &bob, "member").await;

    let last_owner_leaves = leave(&api, &alice, &team_id).await;
    assert_error(&last_owner_leaves, 409, "LAST_OWNER");
    assert_eq!(last_owner_leaves.json["defined"], true);
    let demote = change_role(&api, &alice, &team_id, &alice, "admin").await;
    assert_error(&demote, 409, "LAST_OWNER");
    let remove_self = remove_member(&api, &alice, &team_id, &alice).await;
    assert_error(&remove_self, 400, "BAD_REQUEST");
    assert_eq!(owner_count(&api, &team_id).await, 1);

    // Hand over, then leave.
    change_role(&api, &alice, &team_id, &bob, "owner")
        .await
        .ok();
    let left = leave(&api, &alice, &team_id).await.ok();
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
    invite(&api, &bob, &team_id, "carol@example.com").await.ok();
    let closed = leave(&api, &bob, &team_id).await.ok();
    assert_eq!(closed["teamDeleted"], true);
    let sets = api.changesets().await;
    let team_tombstone = changes_for(&sets, &team_scope(&team_id))
        .into_iter()
        .rfind(|change| change.table == "teams")
        .unwrap();
    assert_eq!(team_tombstone.op, ChangeOp::Delete);
    assert!(team_tombstone.row["deletedAt"].as_i64().is_some());
    let carol = api.login("carol@example.com").await;
    assert_eq!(invitations_of(&api, &carol).await, json!([]));
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
        change_role(&api, &alice, &team_id, &bob, "owner")
            .await
            .ok();
        assert_eq!(owner_count(&api, &team_id).await, 2);
        let (first, second) = if round % 2 == 0 {
            // Each demotes the other.
            tokio::join!(
                change_role(&api, &alice, &team_id, &bob, "member"),
                change_role(&api, &bob, &team_id, &alice, "member")
            )
        } else {
            // Each demotes themselves.
            tokio::join!(
                change_role(&api, &alice, &team_id, &alice, "admin"),
                change_role(&api, &bob, &team_id, &bob, "admin")
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
        change_role(&api, &alice, &team_id, &bob, "owner")
            .await
            .ok();
        let (first, second) =
            tokio::join!(leave(&api, &alice, &team_id), leave(&api, &bob, &team_id));
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
    change_role(&api, &owner, &team_id, &co_owner, "owner")
        .await
        .ok();
    api.age_sessions(&owner).await;
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
    let promoted = change_role(&api, &co_owner, &team_id, &member, "owner")
        .await
        .ok();
    assert_eq!(promoted["role"], "owner");
    api.stop().await;
}
