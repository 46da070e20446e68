//! Helpers shared by the stream tests: reading frames into a local copy.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

pub(crate) const QUIET: Duration = Duration::from_millis(1500);

/// The api and one streamer replica with the test settings.
pub(crate) async fn start() -> (TestApi, Streamer) {
    let api = TestApi::start().await;
    let streamer = Streamer::start(&api, |_| {}).await;
    (api, streamer)
}

/// A user signed in for each of `names` (made unique), in order.
pub(crate) async fn users<const N: usize>(api: &TestApi, names: [&str; N]) -> [TestUser; N] {
    let mut users = Vec::with_capacity(N);
    for name in names {
        users.push(api.login(&unique_email(name)).await);
    }
    users.try_into().unwrap_or_else(|_| unreachable!())
}

/// A journal entry input titled `title` in `team_id`.
pub(crate) fn team_entry(title: &str, team_id: &str) -> Value {
    let mut input = entry(title);
    input["teamId"] = json!(team_id);
    input
}

/// `copy` holds exactly the live rows `user` may see, at the versions the database has.
pub(crate) async fn assert_in_sync(copy: &LocalCopy, api: &TestApi, user: &TestUser) {
    assert_eq!(copy.live(), expected_rows(api, user.user_id).await);
}

/// `by` removes `user` from `team_id`.
pub(crate) async fn remove_member(api: &TestApi, by: &TestUser, team_id: &str, user: &TestUser) {
    api.call(
        Some(by),
        "teams/removeMember",
        json!({"teamId": team_id, "userId": user.user_id}),
    )
    .await
    .ok();
}

/// Stop the streamer, then the api.
pub(crate) async fn stop(streamer: Streamer, api: TestApi) {
    streamer.stop().await;
    api.stop().await;
}

/// Open a stream (with `token`, from `since`) and read it into a fresh local copy until it
/// has been quiet for `quiet`.
pub(crate) async fn follow(
    base_url: &str,
    token: &str,
    since: Option<&str>,
    quiet: Duration,
) -> (Sse, LocalCopy) {
    let mut sse = open_stream(base_url, token, since).await;
    let mut copy = LocalCopy::default();
    drain(&mut sse, &mut copy, quiet).await;
    (sse, copy)
}

/// `inviter` invites `user` to `team_id` (with the default role) and `user` accepts the
/// first invitation listed.
pub(crate) async fn invite_and_accept(
    api: &TestApi,
    inviter: &TestUser,
    team_id: &str,
    user: &TestUser,
) {
    api.call(
        Some(inviter),
        "teams/invite",
        json!({"teamId": team_id, "email": user.email}),
    )
    .await
    .ok();
    let invitations = api
        .query(Some(user), "teams/listInvitations", Value::Null)
        .await
        .ok();
    api.call(
        Some(user),
        "teams/acceptInvitation",
        json!({"teamInvitationId": invitations[0]["teamInvitationId"]}),
    )
    .await
    .ok();
}

/// The titles of the journal entries in a local copy.
pub(crate) fn titles(copy: &LocalCopy) -> Vec<String> {
    copy.rows
        .iter()
        .filter(|(key, _)| key.starts_with("journal_entries/"))
        .filter_map(|(_, row)| row["title"].as_str().map(str::to_owned))
        .collect()
}

/// Read frames into `copy` until one of type `kind` (within 60 s); returns the types read
/// (heartbeats aside).
pub(crate) async fn read_until(sse: &mut Sse, copy: &mut LocalCopy, kind: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut kinds = Vec::new();
    loop {
        let event = sse
            .next(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
            .unwrap_or_else(|| panic!("no `{kind}` frame within 60 s, after {kinds:?}"));
        let seen = copy.apply(&event);
        if seen == "heartbeat" {
            continue;
        }
        kinds.push(seen.clone());
        if seen == kind {
            return kinds;
        }
    }
}
