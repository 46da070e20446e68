//! The api's scheduled-job bodies and cron hooks against real Postgres and NATS: due prompts
//! dispatched once per prompt and local date to every recipient (via the hook, the direct
//! call and the cron service's task on the bus), the hooks' bearer secret, one run of a job
//! at a time, the purges, and `user.profile_updated`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bus::Bus;
use chrono::{Timelike, Utc};
use common::{TestApi, TestUser};
use messages::journal::v1::{DispatchDuePrompts, PromptDue, UserProfileUpdated};
use prost::Message;
use serde_json::{Value, json};
use uuid::Uuid;

const SECRET: &str = "cron-secret-0123456789";

async fn with_secret() -> TestApi {
    TestApi::start_with(|config| {
        config.cron_job_secret = Some(secrecy::SecretString::from(SECRET));
    })
    .await
}

async fn hook(api: &TestApi, job: &str, secret: Option<&str>) -> (u16, Value) {
    let mut request = api.client.post(format!("{}/cron/{job}", api.base_url));
    if let Some(secret) = secret {
        request = request.bearer_auth(secret);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A prompt scheduled every day at the current UTC minute, made to look a day old (an
/// occurrence before a prompt existed is never due).
async fn scheduled_prompt(
    api: &TestApi,
    user: &TestUser,
    text: &str,
    team_id: Option<&str>,
) -> String {
    let now = Utc::now();
    let mut input = json!({
        "text": text,
        "schedule": {"time": format!("{:02}:{:02}", now.hour(), now.minute()), "timezone": "UTC",
                     "weekdays": [1, 2, 3, 4, 5, 6, 7]}
    });
    if let Some(team_id) = team_id {
        input["teamId"] = json!(team_id);
    }
    let prompt = api.call(Some(user), "prompts/create", input).await.ok();
    let prompt_id = prompt["promptId"].as_str().unwrap().to_owned();
    sqlx::query(
        "UPDATE prompts SET created_at = now() - interval '1 day' WHERE prompt_id = $1::uuid",
    )
    .bind(&prompt_id)
    .execute(&api.pool)
    .await
    .unwrap();
    prompt_id
}

async fn prompt_due_events(api: &TestApi) -> Vec<PromptDue> {
    api.emitted("EVENTS", "events.prompt.due")
        .await
        .iter()
        .map(|message| PromptDue::decode(message.payload.as_slice()).unwrap())
        .collect()
}

#[tokio::test]
async fn due_prompts_go_once_per_local_date_to_every_recipient() {
    let api = with_secret().await;
    let alice = api.login("alice@example.com").await;
    let bob = api.login("bob@example.com").await;
    let carol = api.login("carol@example.com").await;
    let team_id = api.team_with(&bob, &[(&carol, "member")]).await;
    scheduled_prompt(&api, &alice, "What made you smile?", None).await;
    let team_prompt = scheduled_prompt(&api, &bob, "What did the team ship?", Some(&team_id)).await;
    // Unscheduled and deleted prompts are never dispatched.
    api.call(
        Some(&alice),
        "prompts/create",
        json!({"text": "Free writing"}),
    )
    .await
    .ok();
    let deleted = scheduled_prompt(&api, &alice, "Gone", None).await;
    api.call(Some(&alice), "prompts/delete", json!({"promptId": deleted}))
        .await
        .ok();

    let (status, body) = hook(&api, "dispatch-due-prompts", Some(SECRET)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "succeeded");
    assert_eq!(
        body["report"],
        json!({"job": "dispatch-due-prompts", "prompts": 2, "notifications": 3})
    );
    let events = prompt_due_events(&api).await;
    let recipients: BTreeSet<(String, String, String)> = events
        .iter()
        .map(|event| {
            (
                event.user_id.clone(),
                event.email.clone(),
                event.prompt_text.clone(),
            )
        })
        .collect();
    assert_eq!(
        recipients,
        BTreeSet::from([
            (
                alice.user_id.to_string(),
                alice.email.clone(),
                "What made you smile?".into()
            ),
            (
                bob.user_id.to_string(),
                bob.email.clone(),
                "What did the team ship?".into()
            ),
            (
                carol.user_id.to_string(),
                carol.email.clone(),
                "What did the team ship?".into()
            ),
        ])
    );
    let team_event = events
        .iter()
        .find(|event| event.prompt_id == team_prompt)
        .unwrap();
    assert_eq!(team_event.team_id, team_id);
    assert_eq!(team_event.team_name, "Writers");
    assert_eq!(
        team_event.local_date,
        Utc::now().format("%Y-%m-%d").to_string()
    );

    // Run again (a re-run, a retried task, the next tick): nothing more.
    let report = api::jobs::dispatch_prompts::dispatch_due_prompts(&api.state.db, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        report,
        api::jobs::JobReport::DispatchDuePrompts {
            prompts: 0,
            notifications: 0
        }
    );
    assert_eq!(prompt_due_events(&api).await.len(), 3);

    // The cron service's task on the bus does the same job.
    let dave = api.login("dave@example.com").await;
    scheduled_prompt(&api, &dave, "Dave's question", None).await;
    let client = async_nats::connect(test_support::nats_url()).await.unwrap();
    let bus = Bus::start(async_nats::jetstream::new(client), &api.namespace, "tests")
        .await
        .unwrap();
    bus.publish(
        &DispatchDuePrompts {
            cron_run_id: Uuid::now_v7().to_string(),
            scheduled_for_ms: Utc::now().timestamp_millis(),
        },
        &Uuid::now_v7().to_string(),
    )
    .await
    .unwrap();
    let dispatched = test_support::eventually(Duration::from_secs(20), || async {
        prompt_due_events(&api).await.len() == 4
    })
    .await;
    assert!(dispatched);
    assert_eq!(
        prompt_due_events(&api).await[3].user_id,
        dave.user_id.to_string()
    );
    api.stop().await;
}

#[tokio::test]
async fn hooks_need_the_secret_and_run_one_job_at_a_time() {
    let api = with_secret().await;
    let (status, body) = hook(&api, "roll-over-usage", None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("UNAUTHORIZED")));
    let (status, _) = hook(&api, "roll-over-usage", Some("cron-secret-0123456788")).await;
    assert_eq!(status, 401);
    let (status, body) = hook(&api, "roll-over-usage", Some(SECRET)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["report"],
        json!({"job": "roll-over-usage", "subscriptions": 0})
    );
    let (status, body) = hook(&api, "make-coffee", Some(SECRET)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("JOB_NOT_FOUND"))
    );

    // While a run of the job holds its lock, another is refused (the hook) or steps aside.
    let mut holder = api.pool.acquire().await.unwrap();
    sqlx::query(
        "SELECT pg_advisory_lock(hashtext('api-cron-job'), hashtext('dispatch-due-prompts'))",
    )
    .execute(&mut *holder)
    .await
    .unwrap();
    let (status, body) = hook(&api, "dispatch-due-prompts", Some(SECRET)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("JOB_RUNNING")));
    sqlx::query(
        "SELECT pg_advisory_unlock(hashtext('api-cron-job'), hashtext('dispatch-due-prompts'))",
    )
    .execute(&mut *holder)
    .await
    .unwrap();
    drop(holder);
    let (status, _) = hook(&api, "dispatch-due-prompts", Some(SECRET)).await;
    assert_eq!(status, 200);
    api.stop().await;

    // Without CRON_SECRET the hooks are off.
    let api = TestApi::start().await;
    let (status, body) = hook(&api, "roll-over-usage", Some(SECRET)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("CRON_HOOKS_DISABLED"))
    );
    api.stop().await;
}

#[tokio::test]
async fn purges_remove_dead_sessions_and_soft_deleted_rows_past_retention() {
    let api = with_secret().await;
    let alice = api.login("alice@example.com").await;
    let expired = api.login("alice@example.com").await;
    let revoked = api.login("alice@example.com").await;
    sqlx::query("UPDATE sessions SET expires_at = now() - interval '1 minute' WHERE user_id = $1 AND session_id IN (SELECT session_id FROM sessions WHERE user_id = $1 ORDER BY created_at OFFSET 1 LIMIT 1)")
        .bind(expired.user_id)
        .execute(&api.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE sessions SET revoked_at = now(), revoked_reason = 'revoked' WHERE user_id = $1 AND session_id IN (SELECT session_id FROM sessions WHERE user_id = $1 ORDER BY created_at OFFSET 2 LIMIT 1)")
        .bind(revoked.user_id)
        .execute(&api.pool)
        .await
        .unwrap();
    let (status, body) = hook(&api, "purge-expired-sessions", Some(SECRET)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["report"]["sessions"], 2);
    // The live session still works.
    api.query(Some(&alice), "users/me", Value::Null).await.ok();

    let old = api
        .call(
            Some(&alice),
            "journalEntries/create",
            json!({"title": "Old", "content": "x"}),
        )
        .await
        .ok();
    let recent = api
        .call(
            Some(&alice),
            "journalEntries/create",
            json!({"title": "Recent", "content": "y"}),
        )
        .await
        .ok();
    for entry in [&old, &recent] {
        api.call(
            Some(&alice),
            "journalEntries/delete",
            json!({"journalEntryId": entry["journalEntryId"]}),
        )
        .await
        .ok();
    }
    sqlx::query("UPDATE journal_entries SET deleted_at = now() - interval '31 days' WHERE journal_entry_id = $1::uuid")
        .bind(old["journalEntryId"].as_str().unwrap())
        .execute(&api.pool)
        .await
        .unwrap();
    let (status, body) = hook(&api, "purge-retention", Some(SECRET)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["report"]["journalEntries"], 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT title FROM journal_entries")
        .fetch_all(&api.pool)
        .await
        .unwrap();
    assert_eq!(left, ["Recent"]);
    api.stop().await;
}

#[tokio::test]
async fn a_profile_change_emits_user_profile_updated() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let user = api
        .call(
            Some(&alice),
            "users/update",
            json!({"name": "Alice Liddell", "timezone": "Europe/London"}),
        )
        .await
        .ok();
    let payloads: Vec<Vec<u8>> = api
        .emitted("EVENTS", "events.user.profile_updated")
        .await
        .into_iter()
        .map(|message| message.payload)
        .collect();
    assert_eq!(payloads.len(), 1);
    let event = UserProfileUpdated::decode(payloads[0].as_slice()).unwrap();
    assert_eq!(event.user_id, alice.user_id.to_string());
    assert_eq!(event.name, "Alice Liddell");
    assert_eq!(event.email, "alice@example.com");
    assert_eq!(event.timezone, "Europe/London");
    assert_eq!(json!(event.version), user["version"]);
    api.stop().await;
}

/// Issue 15: nothing ever deleted `request_logs`. `purge-retention` now deletes rows older
/// than `REQUEST_LOG_RETENTION_DAYS`, in batches (more than one batch here).
#[tokio::test]
async fn purge_retention_deletes_request_logs_past_their_retention_in_batches() {
    let api = TestApi::start_with(|config| {
        config.cron_job_secret = Some(secrecy::SecretString::from(SECRET));
        config.request_log_retention = Duration::from_secs(7 * 86_400);
    })
    .await;
    sqlx::query(
        "INSERT INTO request_logs
                (request_log_id, created_at, method, path, status, duration_us, client_ip,
                 request_bytes, response_bytes, request_headers)
         SELECT gen_random_uuid(), now() - make_interval(days => CASE WHEN n <= 2500 THEN 8 ELSE 6 END),
                'GET', '/api/v1/usage', 200, 1, '192.0.2.1', 0, 0, '{}'::jsonb
           FROM generate_series(1, 2600) AS n",
    )
    .execute(&api.pool)
    .await
    .unwrap();
    let (status, body) = hook(&api, "purge-retention", Some(SECRET)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["report"]["requestLogs"], 2500);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM request_logs")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(left, 100);
    api.stop().await;
}
