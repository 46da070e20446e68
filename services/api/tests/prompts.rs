//! `prompts.*` against real Postgres and NATS: CRUD, validation, team permissions, changesets
//! and `prompts.today`'s choice by weekday and time zone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use chrono::{Datelike, NaiveDate, Utc};
use common::{TestApi, TestUser};
use messages::sync::v1::ChangeOp;
use serde_json::{Value, json};

async fn create(api: &TestApi, user: &TestUser, input: Value) -> Value {
    api.call(Some(user), "prompts/create", input).await.ok()
}

fn texts(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["text"].as_str().unwrap().to_owned())
        .collect()
}

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

#[tokio::test]
async fn team_prompts_are_managed_by_admins_and_seen_by_members() {
    let api = TestApi::start().await;
    let owner = api.login("owner@example.com").await;
    let admin = api.login("admin@example.com").await;
    let member = api.login("member@example.com").await;
    let outsider = api.login("outsider@example.com").await;
    let team_id = api
        .team_with(&owner, &[(&admin, "admin"), (&member, "member")])
        .await;

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

async fn today(api: &TestApi, user: &TestUser, date: &str) -> Value {
    let answer = api
        .query(Some(user), "prompts/today", json!({"date": date}))
        .await
        .ok();
    assert_eq!(answer["date"], date);
    answer
}

fn text_of(today: &Value) -> Option<String> {
    today["prompt"]["text"].as_str().map(str::to_owned)
}

async fn set_timezone(api: &TestApi, user: &TestUser, timezone: &str) {
    api.call(Some(user), "users/update", json!({"timezone": timezone}))
        .await
        .ok();
}

#[tokio::test]
async fn today_picks_by_weekday_and_time_zone() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let stranger = api.login("stranger@example.com").await;
    set_timezone(&api, &alice, "Europe/Berlin").await;
    let scheduled = |text: &str, time: &str, timezone: &str, weekdays: Value| json!({"text": text, "schedule": {"time": time, "timezone": timezone, "weekdays": weekdays}});
    // 2025-06-02 is a Monday; Berlin is UTC+2 then, Los Angeles UTC-7.
    create(
        &api,
        &alice,
        scheduled("Monday nine", "09:00", "Europe/Berlin", json!([1])),
    )
    .await;
    let early = create(
        &api,
        &alice,
        scheduled("Early riser", "07:00", "Europe/Berlin", json!([1, 3])),
    )
    .await;
    // Tuesday 23:30 in Los Angeles is Wednesday 08:30 in Berlin.
    create(
        &api,
        &alice,
        scheduled("Pacific night", "23:30", "America/Los_Angeles", json!([2])),
    )
    .await;
    let free_a = create(&api, &alice, json!({"text": "Free A"})).await;
    let free_b = create(&api, &alice, json!({"text": "Free B"})).await;
    // Another user's prompts never count.
    create(
        &api,
        &stranger,
        scheduled("Stranger", "00:00", "UTC", json!([1, 2, 3, 4, 5, 6, 7])),
    )
    .await;

    // Monday: two are due, the earlier wins.
    assert_eq!(
        text_of(&today(&api, &alice, "2025-06-02").await).as_deref(),
        Some("Early riser")
    );
    // Wednesday: 07:00 Berlin beats 08:30 Berlin (the Pacific Tuesday night).
    assert_eq!(
        text_of(&today(&api, &alice, "2025-06-04").await).as_deref(),
        Some("Early riser")
    );
    // Tuesday in Berlin: nothing scheduled (the Pacific one falls on Wednesday), so an
    // unscheduled prompt, by id and the day number.
    let mut free = [free_a, free_b];
    free.sort_by_key(|prompt| prompt["promptId"].as_str().unwrap().to_owned());
    let pick = |date: &str| {
        let day = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
        free[usize::try_from(day.num_days_from_ce()).unwrap() % 2]["text"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let tuesday = text_of(&today(&api, &alice, "2025-06-03").await);
    assert_eq!(tuesday, Some(pick("2025-06-03")));
    assert_eq!(
        text_of(&today(&api, &alice, "2025-06-03").await),
        tuesday,
        "stable"
    );
    // The pick rotates day by day: Thursday and Friday (both unscheduled) differ.
    let thursday = text_of(&today(&api, &alice, "2025-06-05").await);
    assert_eq!(thursday, Some(pick("2025-06-05")));
    let friday = text_of(&today(&api, &alice, "2025-06-06").await);
    assert_eq!(friday, Some(pick("2025-06-06")));
    assert_ne!(thursday, friday);

    // Without "Early riser", Wednesday belongs to the Pacific prompt.
    api.call(
        Some(&alice),
        "prompts/delete",
        json!({"promptId": early["promptId"]}),
    )
    .await
    .ok();
    assert_eq!(
        text_of(&today(&api, &alice, "2025-06-04").await).as_deref(),
        Some("Pacific night")
    );

    // In Los Angeles the Pacific prompt is Tuesday's, and Monday 09:00 Berlin is Monday 00:00.
    set_timezone(&api, &alice, "America/Los_Angeles").await;
    assert_eq!(
        text_of(&today(&api, &alice, "2025-06-03").await).as_deref(),
        Some("Pacific night")
    );
    assert_eq!(
        text_of(&today(&api, &alice, "2025-06-02").await).as_deref(),
        Some("Monday nine")
    );
    let wednesday = text_of(&today(&api, &alice, "2025-06-04").await);
    assert_eq!(wednesday, Some(pick("2025-06-04")), "unscheduled again");
    api.stop().await;
}

#[tokio::test]
async fn today_without_a_date_uses_the_callers_day_and_team_prompts_count() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let bob = api.login("bob@example.com").await;
    let carol = api.login("carol@example.com").await;
    set_timezone(&api, &alice, "Pacific/Kiritimati").await;

    // Nothing visible: no prompt.
    let before = Utc::now()
        .with_timezone(&chrono_tz::Pacific::Kiritimati)
        .date_naive();
    let empty = api
        .query(Some(&alice), "prompts/today", Value::Null)
        .await
        .ok();
    let after = Utc::now()
        .with_timezone(&chrono_tz::Pacific::Kiritimati)
        .date_naive();
    let date = empty["date"].as_str().unwrap();
    assert!(
        [before.to_string(), after.to_string()].contains(&date.to_owned()),
        "{date} is today in Kiritimati ({before})"
    );
    assert_eq!(empty["prompt"], Value::Null);
    let posted = api
        .call(Some(&alice), "prompts/today", json!({}))
        .await
        .ok();
    assert!(posted["date"].is_string());

    // A team prompt scheduled every day is every member's prompt of the day.
    let team_id = api.team_with(&bob, &[(&alice, "member")]).await;
    create(
        &api,
        &bob,
        json!({"text": "Team daily", "teamId": team_id,
               "schedule": {"time": "12:00", "timezone": "Pacific/Kiritimati",
                            "weekdays": [1, 2, 3, 4, 5, 6, 7]}}),
    )
    .await;
    let daily = today(&api, &alice, "2025-06-02").await;
    assert_eq!(text_of(&daily).as_deref(), Some("Team daily"));
    assert_eq!(daily["prompt"]["teamId"], team_id.as_str());
    let outside = today(&api, &carol, "2025-06-02").await;
    assert_eq!(outside["prompt"], Value::Null);
    api.stop().await;
}
