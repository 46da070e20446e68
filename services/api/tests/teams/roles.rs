//! What each role may do in a team, and what outsiders see.

use messages::journal::v1::TeamMemberLeft;
use messages::sync::v1::ChangeOp;
use prost::Message;
use serde_json::json;

use crate::common::TestApi;
use crate::fixtures::{
    Change, add_member, assert_error, change_role, changes_for, create_team, invite, leave,
    member_row_id, outbox_payloads, remove_member, roles, team_scope, user_scope,
};

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
        let invited = invite(&api, &dave, id, "x@example.com").await;
        assert_error(&invited, 404, "NOT_FOUND");
        let left = leave(&api, &dave, id).await;
        assert_error(&left, 404, "NOT_FOUND");
        let changed = change_role(&api, &dave, id, &dave, "owner").await;
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
    let invited = invite(&api, &bob, &team_id, "x@example.com").await;
    assert_error(&invited, 403, "FORBIDDEN");
    let promoted = change_role(&api, &bob, &team_id, &bob, "admin").await;
    assert_error(&promoted, 403, "FORBIDDEN");
    let removed = remove_member(&api, &bob, &team_id, &carol).await;
    assert_error(&removed, 403, "FORBIDDEN");

    // An admin renames, invites members, moves members and admins, never touches owners.
    api.call(
        Some(&carol),
        "teams/rename",
        json!({ "teamId": team_id, "name": "Lab 2" }),
    )
    .await
    .ok();
    invite(&api, &carol, &team_id, "frank@example.com")
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
    let demote_owner = change_role(&api, &carol, &team_id, &alice, "member").await;
    assert_error(&demote_owner, 403, "FORBIDDEN");
    let grant_owner = change_role(&api, &carol, &team_id, &bob, "owner").await;
    assert_error(&grant_owner, 403, "FORBIDDEN");
    let self_owner = change_role(&api, &carol, &team_id, &carol, "owner").await;
    assert_error(&self_owner, 403, "FORBIDDEN");
    let remove_owner = remove_member(&api, &carol, &team_id, &alice).await;
    assert_error(&remove_owner, 403, "FORBIDDEN");
    let remove_admin = remove_member(&api, &carol, &team_id, &erin).await;
    assert_error(&remove_admin, 403, "FORBIDDEN");

    let bob_admin = change_role(&api, &carol, &team_id, &bob, "admin")
        .await
        .ok();
    assert_eq!(bob_admin["role"], "admin");
    assert_eq!(bob_admin["version"], 2);
    let bob_member = change_role(&api, &carol, &team_id, &bob, "member")
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
    let tombstone = remove_member(&api, &carol, &team_id, &bob).await.ok();
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
    remove_member(&api, &alice, &team_id, &erin).await.ok();
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
