//! Who sees which entries: personal entries, team entries by membership and role, and the
//! prompts an entry may answer.

use serde_json::{Value, json};

use crate::common::TestApi;
use crate::fixtures::{
    create, delete_entry, entry, get_entry, id, list_entries, restore_entry, titles, try_create,
    update_entry,
};

#[tokio::test]
async fn personal_entries_are_invisible_to_everyone_else() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let bob = api.login("bob@example.com").await;
    let mine = entry(&api, &alice, "Alice's secret").await;
    let entry_id = id(&mine).to_owned();

    let get = get_entry(&api, &bob, &entry_id).await;
    assert_eq!(get.status, 404);
    assert_eq!(get.code(), "NOT_FOUND");
    // The same answer as an id that does not exist.
    let missing = api
        .query(
            Some(&bob),
            "journalEntries/get",
            json!({"journalEntryId": uuid::Uuid::new_v4()}),
        )
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json["message"], get.json["message"]);
    for (procedure, input) in [
        (
            "journalEntries/update",
            json!({"journalEntryId": entry_id, "title": "pwned"}),
        ),
        ("journalEntries/delete", json!({"journalEntryId": entry_id})),
        (
            "journalEntries/restore",
            json!({"journalEntryId": entry_id}),
        ),
    ] {
        let answer = api.call(Some(&bob), procedure, input).await;
        assert_eq!(answer.status, 404, "{procedure}: {}", answer.json);
        assert_eq!(answer.code(), "NOT_FOUND");
    }
    for scope in ["all", "personal", "team"] {
        for deleted in [false, true] {
            let page = list_entries(&api, &bob, json!({"scope": scope, "deleted": deleted}))
                .await
                .ok();
            assert_eq!(page["items"], json!([]), "{scope} {deleted}");
        }
    }
    // Alice's entry is untouched.
    let got = get_entry(&api, &alice, &entry_id).await.ok();
    assert_eq!(got, mine);
    // Without a session nothing is answered.
    let anonymous = api.query(None, "journalEntries/list", Value::Null).await;
    assert_eq!(anonymous.status, 401);
    api.stop().await;
}

#[tokio::test]
async fn team_entries_follow_membership_and_roles() {
    let api = TestApi::start().await;
    let owner = api.login("owner@example.com").await;
    let admin = api.login("admin@example.com").await;
    let bob = api.login("bob@example.com").await;
    let erin = api.login("erin@example.com").await;
    let outsider = api.login("outsider@example.com").await;
    let team_id = api
        .team_with(
            &owner,
            &[(&admin, "admin"), (&bob, "member"), (&erin, "member")],
        )
        .await;

    // A non-member cannot write into the team.
    let intrude = try_create(
        &api,
        &outsider,
        json!({"title": "t", "content": "", "teamId": team_id}),
    )
    .await;
    assert_eq!(intrude.status, 404);
    assert_eq!(intrude.code(), "NOT_FOUND");

    let shared = create(
        &api,
        &bob,
        json!({"title": "Team notes", "content": "standup", "teamId": team_id}),
    )
    .await;
    assert_eq!(shared["teamId"], team_id.as_str());
    assert_eq!(shared["authorUserId"], bob.user_id.to_string());
    let entry_id = id(&shared).to_owned();
    let personal = entry(&api, &bob, "Bob's own").await;

    // Every member reads it; an outsider does not, even naming the team.
    for member in [&owner, &admin, &erin] {
        let got = get_entry(&api, member, &entry_id).await.ok();
        assert_eq!(got["title"], "Team notes");
        let page = list_entries(&api, member, json!({"teamId": team_id}))
            .await
            .ok();
        assert_eq!(titles(&page), vec!["Team notes"]);
    }
    let get = get_entry(&api, &outsider, &entry_id).await;
    assert_eq!(get.code(), "NOT_FOUND");
    let list = list_entries(&api, &outsider, json!({"teamId": team_id})).await;
    assert_eq!(list.status, 404);
    assert_eq!(list.code(), "NOT_FOUND");
    let everything = list_entries(&api, &outsider, Value::Null).await.ok();
    assert_eq!(everything["items"], json!([]));
    // Bob's personal entry stays his, even for his team's owner.
    let peek = get_entry(&api, &owner, id(&personal)).await;
    assert_eq!(peek.code(), "NOT_FOUND");

    // Scopes: bob sees both; "personal" and "team" split them.
    let all = list_entries(&api, &bob, json!({})).await.ok();
    assert_eq!(titles(&all), vec!["Bob's own", "Team notes"]);
    let only_personal = list_entries(&api, &bob, json!({"scope": "personal"}))
        .await
        .ok();
    assert_eq!(titles(&only_personal), vec!["Bob's own"]);
    let only_team = list_entries(&api, &bob, json!({"scope": "team"}))
        .await
        .ok();
    assert_eq!(titles(&only_team), vec!["Team notes"]);

    // Another member may read but not change it.
    for (procedure, input) in [
        (
            "journalEntries/update",
            json!({"journalEntryId": entry_id, "title": "Erin was here"}),
        ),
        ("journalEntries/delete", json!({"journalEntryId": entry_id})),
    ] {
        let answer = api.call(Some(&erin), procedure, input).await;
        assert_eq!(answer.status, 403, "{procedure}");
        assert_eq!(answer.code(), "FORBIDDEN");
    }
    // A team admin may.
    let moderated = update_entry(
        &api,
        &admin,
        json!({"journalEntryId": entry_id, "content": "standup (edited)"}),
    )
    .await
    .ok();
    assert_eq!(moderated["content"], "standup (edited)");
    assert_eq!(moderated["authorUserId"], bob.user_id.to_string());
    assert_eq!(moderated["version"], 2);
    let deleted = delete_entry(&api, &admin, &entry_id).await.ok();
    assert!(deleted["deletedAt"].is_i64());
    let trash = list_entries(&api, &erin, json!({"teamId": team_id, "deleted": true}))
        .await
        .ok();
    assert_eq!(titles(&trash), vec!["Team notes"]);
    let restored = restore_entry(&api, &bob, &entry_id).await.ok();
    assert_eq!(restored["deletedAt"], Value::Null);
    assert_eq!(restored["version"], 4);

    // The team's entries sync to the team's scope; the personal one to bob's.
    let team_scope = format!("team.{team_id}");
    let bob_scope = format!("user.{}", bob.user_id);
    let changes = api.row_changes("journal_entries").await;
    let scopes_of = |row_id: &str| -> Vec<String> {
        changes
            .iter()
            .filter(|(_, change)| change.row_id == row_id)
            .map(|(scope, _)| scope.clone())
            .collect()
    };
    assert_eq!(scopes_of(&entry_id), vec![team_scope.clone(); 4]);
    assert_eq!(scopes_of(id(&personal)), vec![bob_scope]);
    // The admin's edit names who made it.
    let updated_by: Vec<String> = api
        .emitted("EVENTS", "events.journal_entry.updated")
        .await
        .into_iter()
        .map(|message| String::from_utf8_lossy(&message.payload).into_owned())
        .collect();
    assert_eq!(updated_by.len(), 1);
    assert!(updated_by[0].contains(&admin.user_id.to_string()));

    // Leaving the team ends access, also to the entries one wrote.
    sqlx::query(
        "UPDATE team_members SET deleted_at = now() WHERE team_id = $1::uuid AND user_id = $2",
    )
    .bind(&team_id)
    .bind(bob.user_id)
    .execute(&api.pool)
    .await
    .unwrap();
    let gone = get_entry(&api, &bob, &entry_id).await;
    assert_eq!(gone.code(), "NOT_FOUND");
    let all = list_entries(&api, &bob, Value::Null).await.ok();
    assert_eq!(titles(&all), vec!["Bob's own"]);
    api.stop().await;
}

#[tokio::test]
async fn entries_answer_prompts_the_author_can_see() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let bob = api.login("bob@example.com").await;
    let team_id = api.team_with(&alice, &[(&bob, "member")]).await;
    let personal = api
        .call(
            Some(&alice),
            "prompts/create",
            json!({"text": "What went well?"}),
        )
        .await
        .ok();
    let team_prompt = api
        .call(
            Some(&alice),
            "prompts/create",
            json!({"text": "Team retro", "teamId": team_id}),
        )
        .await
        .ok();

    let answer = create(
        &api,
        &alice,
        json!({"title": "t", "content": "", "promptId": personal["promptId"]}),
    )
    .await;
    assert_eq!(answer["promptId"], personal["promptId"]);
    let team_answer = create(
        &api,
        &bob,
        json!({"title": "t", "content": "", "promptId": team_prompt["promptId"], "teamId": team_id}),
    )
    .await;
    assert_eq!(team_answer["promptId"], team_prompt["promptId"]);

    // Bob cannot use alice's personal prompt; nobody can use a deleted one.
    let foreign = try_create(
        &api,
        &bob,
        json!({"title": "t", "content": "", "promptId": personal["promptId"]}),
    )
    .await;
    assert_eq!(foreign.status, 404);
    assert_eq!(foreign.code(), "NOT_FOUND");
    // A team entry answers only its team's prompts: other members could not resolve alice's.
    let personal_in_team = try_create(
        &api,
        &alice,
        json!({"title": "t", "content": "", "promptId": personal["promptId"], "teamId": team_id}),
    )
    .await;
    assert_eq!(personal_in_team.code(), "NOT_FOUND");
    api.call(
        Some(&alice),
        "prompts/delete",
        json!({"promptId": personal["promptId"]}),
    )
    .await
    .ok();
    let deleted = try_create(
        &api,
        &alice,
        json!({"title": "t", "content": "", "promptId": personal["promptId"]}),
    )
    .await;
    assert_eq!(deleted.code(), "NOT_FOUND");
    assert_eq!(api.events_named("journal_entry.created").await, 2);
    api.stop().await;
}
