//! Today's prompt: by weekday and time zone, and the caller's day when no date is given.

use chrono::{Datelike, NaiveDate, Utc};
use serde_json::{Value, json};

use crate::common::{TestApi, TestUser};
use crate::fixtures::{create, today};

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
