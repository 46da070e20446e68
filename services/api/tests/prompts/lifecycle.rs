//! Creating, listing, updating and deleting prompts, and the validation of their inputs.

use messages::sync::v1::ChangeOp;
use serde_json::{Value, json};

use crate::common::TestApi;
use crate::fixtures::{create, texts};

#[tokio::test]
async fn create_list_update_delete_with_changesets() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let bob = api.login("bob@example.com").await;

    let scheduled = create(
        &api,
        &alice,
        json!({"text": "  What made you smile?  ",
               "schedule": {"time": "08:30", "timezone": "Europe/Berlin", "weekdays": [5, 1, 3]}}),
    )
    .await;
    assert_eq!(scheduled["text"], "What made you smile?", "trimmed");
    assert_eq!(scheduled["ownerUserId"], alice.user_id.to_string());
    assert_eq!(scheduled["authorUserId"], alice.user_id.to_string());
    assert_eq!(scheduled["teamId"], Value::Null);
    assert_eq!(
        scheduled["schedule"],
        json!({"time": "08:30", "timezone": "Europe/Berlin", "weekdays": [1, 3, 5]})
    );
    assert_eq!(scheduled["version"], 1);
    assert_eq!(scheduled["deletedAt"], Value::Null);
    let prompt_id = scheduled["promptId"].as_str().unwrap().to_owned();
    let plain = create(&api, &alice, json!({"text": "Anything new?"})).await;
    assert_eq!(plain["schedule"], Value::Null);

    let list = api
        .query(Some(&alice), "prompts/list", Value::Null)
        .await
        .ok();
    assert_eq!(texts(&list), vec!["Anything new?", "What made you smile?"]);
    assert_eq!(list["items"][1], scheduled);
    // Nobody else sees them.
    let others = api.query(Some(&bob), "prompts/list", json!({})).await.ok();
    assert_eq!(others["items"], json!([]));

    let updated = api
        .call(
            Some(&alice),
            "prompts/update",
            json!({"promptId": prompt_id, "expectedVersion": 1, "text": "What made you laugh?"}),
        )
        .await
        .ok();
    assert_eq!(updated["text"], "What made you laugh?");
    assert_eq!(updated["schedule"], scheduled["schedule"], "kept");
    assert_eq!(updated["version"], 2);
    let stale = api
        .call(
            Some(&alice),
            "prompts/update",
            json!({"promptId": prompt_id, "expectedVersion": 1, "text": "x"}),
        )
        .await;
    assert_eq!(stale.status, 409);
    assert_eq!(stale.code(), "EDIT_CONFLICT");
    assert_eq!(stale.json["data"]["currentVersion"], 2);
    assert_eq!(stale.json["data"]["currentUpdatedAt"], updated["updatedAt"]);
    let unscheduled = api
        .call(
            Some(&alice),
            "prompts/update",
            json!({"promptId": prompt_id, "schedule": null}),
        )
        .await
        .ok();
    assert_eq!(unscheduled["schedule"], Value::Null);
    assert_eq!(unscheduled["text"], "What made you laugh?");
    assert_eq!(unscheduled["version"], 3);
    let rescheduled = api
        .call(
            Some(&alice),
            "prompts/update",
            json!({"promptId": prompt_id,
                   "schedule": {"time": "21:00", "timezone": "UTC", "weekdays": [7]}}),
        )
        .await
        .ok();
    assert_eq!(
        rescheduled["schedule"],
        json!({"time": "21:00", "timezone": "UTC", "weekdays": [7]})
    );

    // Another user can neither change nor delete it.
    for (procedure, input) in [
        (
            "prompts/update",
            json!({"promptId": prompt_id, "text": "mine now"}),
        ),
        ("prompts/delete", json!({"promptId": prompt_id})),
    ] {
        let answer = api.call(Some(&bob), procedure, input).await;
        assert_eq!(answer.status, 404, "{procedure}");
        assert_eq!(answer.code(), "NOT_FOUND");
    }

    let deleted = api
        .call(
            Some(&alice),
            "prompts/delete",
            json!({"promptId": prompt_id}),
        )
        .await
        .ok();
    assert!(deleted["deletedAt"].is_i64());
    assert_eq!(deleted["version"], 5);
    let again = api
        .call(
            Some(&alice),
            "prompts/delete",
            json!({"promptId": prompt_id}),
        )
        .await
        .ok();
    assert_eq!(again, deleted);
    let edit_deleted = api
        .call(
            Some(&alice),
            "prompts/update",
            json!({"promptId": prompt_id, "text": "x"}),
        )
        .await;
    assert_eq!(edit_deleted.status, 409);
    assert_eq!(edit_deleted.code(), "PROMPT_DELETED");
    let live = api
        .query(Some(&alice), "prompts/list", json!({}))
        .await
        .ok();
    assert_eq!(texts(&live), vec!["Anything new?"]);
    let all = api
        .query(
            Some(&alice),
            "prompts/list",
            json!({"includeDeleted": true}),
        )
        .await
        .ok();
    assert_eq!(texts(&all), vec!["Anything new?", "What made you laugh?"]);

    let user_scope = format!("user.{}", alice.user_id);
    let changes: Vec<(String, i32, i64)> = api
        .row_changes("prompts")
        .await
        .into_iter()
        .filter(|(_, change)| change.row_id == prompt_id)
        .map(|(scope, change)| (scope, change.op, change.version))
        .collect();
    assert_eq!(
        changes,
        vec![
            (user_scope.clone(), ChangeOp::Insert as i32, 1),
            (user_scope.clone(), ChangeOp::Update as i32, 2),
            (user_scope.clone(), ChangeOp::Update as i32, 3),
            (user_scope.clone(), ChangeOp::Update as i32, 4),
            (user_scope.clone(), ChangeOp::Delete as i32, 5),
        ]
    );
    api.stop().await;
}

#[tokio::test]
async fn invalid_inputs_name_their_fields() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let schedule = |time: &str, timezone: &str, weekdays: Value| json!({"text": "t", "schedule": {"time": time, "timezone": timezone, "weekdays": weekdays}});
    let cases = [
        ("prompts/create", json!({"text": ""}), vec!["text"]),
        ("prompts/create", json!({"text": "   "}), vec!["text"]),
        (
            "prompts/create",
            json!({"text": "x".repeat(501)}),
            vec!["text"],
        ),
        (
            "prompts/create",
            schedule("25:00", "UTC", json!([1])),
            vec!["schedule.time"],
        ),
        (
            "prompts/create",
            schedule("9:00", "UTC", json!([1])),
            vec!["schedule.time"],
        ),
        (
            "prompts/create",
            schedule("09:00", "Mars/Olympus_Mons", json!([1])),
            vec!["schedule.timezone"],
        ),
        (
            "prompts/create",
            schedule("09:00", "UTC", json!([0, 3, 8])),
            vec!["schedule.weekdays.0", "schedule.weekdays.2"],
        ),
        (
            "prompts/create",
            schedule("09:00", "UTC", json!([1, 2, 1])),
            vec!["schedule.weekdays.2"],
        ),
        (
            "prompts/create",
            schedule("09:00", "UTC", json!([])),
            vec!["schedule.weekdays"],
        ),
        (
            "prompts/create",
            json!({"text": "t", "schedule": {"time": "09:00", "timezone": "UTC"}}),
            vec!["schedule.weekdays"],
        ),
        (
            "prompts/update",
            json!({"promptId": uuid::Uuid::new_v4(), "text": "",
                   "schedule": {"time": "noon", "timezone": "UTC", "weekdays": [1]}}),
            vec!["text", "schedule.time"],
        ),
        ("prompts/today", json!({"date": "2025-02-29"}), vec!["date"]),
        ("prompts/today", json!({"day": "2025-02-28"}), vec![""]),
        ("prompts/list", json!({"teamId": "x"}), vec!["teamId"]),
    ];
    for (procedure, input, paths) in cases {
        let answer = api.call(Some(&alice), procedure, input.clone()).await;
        assert_eq!(answer.status, 400, "{procedure} {input}: {}", answer.json);
        assert_eq!(answer.code(), "BAD_REQUEST");
        assert_eq!(answer.issue_paths(), paths, "{procedure} {input}");
    }
    let list = api
        .query(Some(&alice), "prompts/list", json!({}))
        .await
        .ok();
    assert_eq!(list["items"], json!([]), "nothing was created");
    api.stop().await;
}
