//! Creating, listing, getting and renaming teams, and the validation of their inputs.

use messages::sync::v1::ChangeOp;
use serde_json::{Value, json};

use crate::common::TestApi;
use crate::fixtures::{
    Change, assert_error, change_role, changes_for, create_team, member_row_id, team_scope,
    user_scope,
};

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

    let bad_role = change_role(&api, &alice, &team_id, &alice, "boss").await;
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
