//! Team prompts: managed by admins, seen by members.

use messages::sync::v1::ChangeOp;
use serde_json::{Value, json};

use crate::common::TestApi;
use crate::fixtures::{create, texts};

#[tokio::test]
async fn team_prompts_are_managed_by_admins_and_seen_by_members() {
    let api = TestApi::start().await;
    let (owner, admin, member, outsider, team_id) = api.team_of_every_role().await;

    let by_member = api
        .call(
            Some(&member),
            "prompts/create",
            json!({"text": "t", "teamId": team_id}),
        )
        .await;
    assert_eq!(by_member.status, 403);
    assert_eq!(by_member.code(), "FORBIDDEN");
    let by_outsider = api
        .call(
            Some(&outsider),
            "prompts/create",
            json!({"text": "t", "teamId": team_id}),
        )
        .await;
    assert_eq!(by_outsider.status, 404);
    assert_eq!(by_outsider.code(), "NOT_FOUND");

    let prompt = create(
        &api,
        &admin,
        json!({"text": "Weekly retro", "teamId": team_id,
               "schedule": {"time": "16:00", "timezone": "UTC", "weekdays": [5]}}),
    )
    .await;
    assert_eq!(prompt["teamId"], team_id.as_str());
    assert_eq!(prompt["ownerUserId"], Value::Null);
    assert_eq!(prompt["authorUserId"], admin.user_id.to_string());
    let prompt_id = prompt["promptId"].as_str().unwrap().to_owned();
    create(&api, &member, json!({"text": "Member's own"})).await;

    let seen = api
        .query(Some(&member), "prompts/list", Value::Null)
        .await
        .ok();
    assert_eq!(texts(&seen), vec!["Member's own", "Weekly retro"]);
    let team_only = api
        .query(Some(&member), "prompts/list", json!({"teamId": team_id}))
        .await
        .ok();
    assert_eq!(texts(&team_only), vec!["Weekly retro"]);
    let outsider_list = api
        .query(Some(&outsider), "prompts/list", json!({"teamId": team_id}))
        .await;
    assert_eq!(outsider_list.code(), "NOT_FOUND");
    let outsider_all = api
        .query(Some(&outsider), "prompts/list", Value::Null)
        .await
        .ok();
    assert_eq!(outsider_all["items"], json!([]));
    let owner_list = api
        .query(Some(&owner), "prompts/list", Value::Null)
        .await
        .ok();
    assert_eq!(
        texts(&owner_list),
        vec!["Weekly retro"],
        "not the member's own"
    );

    for (user, status) in [(&member, 403), (&outsider, 404)] {
        for (procedure, input) in [
            (
                "prompts/update",
                json!({"promptId": prompt_id, "text": "x"}),
            ),
            ("prompts/delete", json!({"promptId": prompt_id})),
        ] {
            let answer = api.call(Some(user), procedure, input).await;
            assert_eq!(answer.status, status, "{procedure} by {}", user.email);
        }
    }
    let renamed = api
        .call(
            Some(&owner),
            "prompts/update",
            json!({"promptId": prompt_id, "text": "Friday retro"}),
        )
        .await
        .ok();
    assert_eq!(renamed["text"], "Friday retro");
    let deleted = api
        .call(
            Some(&admin),
            "prompts/delete",
            json!({"promptId": prompt_id}),
        )
        .await
        .ok();
    assert!(deleted["deletedAt"].is_i64());

    let team_scope = format!("team.{team_id}");
    let scopes: Vec<(String, i32)> = api
        .row_changes("prompts")
        .await
        .into_iter()
        .filter(|(_, change)| change.row_id == prompt_id)
        .map(|(scope, change)| (scope, change.op))
        .collect();
    assert_eq!(
        scopes,
        vec![
            (team_scope.clone(), ChangeOp::Insert as i32),
            (team_scope.clone(), ChangeOp::Update as i32),
            (team_scope.clone(), ChangeOp::Delete as i32),
        ]
    );
    api.stop().await;
}
