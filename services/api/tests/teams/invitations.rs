//! Invitations: accepting, declining, refreshing and expiring.

use messages::journal::v1::TeamInvitationCreated;
use messages::sync::v1::ChangeOp;
use prost::Message;
use serde_json::json;

use crate::common::TestApi;
use crate::fixtures::{
    accept_invitation, assert_error, changes_for, create_team, decline_invitation, invitations_of,
    invite, member_row_id, outbox_payloads, roles, team_scope, user_scope,
};

#[tokio::test]
async fn invitations_accept_decline_refresh_and_expire() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let bob = api.login("bob@example.com").await;
    let carol = api.login("carol@example.com").await;
    let team_id = create_team(&api, &alice, "Writers").await;

    // The address is matched case-insensitively and stored lowercased.
    let invitation = invite(&api, &alice, &team_id, " Bob@Example.COM ")
        .await
        .ok();
    let invitation_id = invitation["teamInvitationId"].as_str().unwrap().to_owned();
    assert_eq!(invitation["email"], "bob@example.com");
    assert_eq!(invitation["role"], "member");
    assert_eq!(invitation["status"], "pending");
    assert_eq!(invitation["teamId"], team_id.as_str());
    assert_eq!(invitation["teamName"], "Writers");
    assert_eq!(invitation["invitedByUserId"], alice.user_id.to_string());
    assert_eq!(invitation["invitedByName"], "alice");
    let lifetime =
        invitation["expiresAt"].as_i64().unwrap() - invitation["createdAt"].as_i64().unwrap();
    assert!((lifetime - 14 * 86_400_000).abs() < 5_000, "{lifetime}");

    // The event for the notifier, in the same transaction.
    assert_eq!(api.events_named("team.invitation_created").await, 1);
    let payloads = outbox_payloads(&api, "team.invitation_created").await;
    let event = TeamInvitationCreated::decode(payloads[0].as_slice()).unwrap();
    assert_eq!(event.team_invitation_id, invitation_id);
    assert_eq!(event.team_id, team_id);
    assert_eq!(event.team_name, "Writers");
    assert_eq!(event.email, "bob@example.com");
    assert_eq!(event.role, "member");
    assert_eq!(event.invited_by_user_id, alice.user_id.to_string());
    assert_eq!(event.invited_by_name, "alice");
    assert_eq!(
        event.expires_at_ms,
        invitation["expiresAt"].as_i64().unwrap()
    );

    // Only the addressee finds and answers it.
    let for_bob = invitations_of(&api, &bob).await;
    assert_eq!(for_bob.as_array().unwrap().len(), 1);
    assert_eq!(for_bob[0]["teamInvitationId"], invitation_id.as_str());
    assert_eq!(for_bob[0]["teamName"], "Writers");
    let for_carol = invitations_of(&api, &carol).await;
    assert_eq!(for_carol, json!([]));
    let stolen = accept_invitation(&api, &carol, &invitation_id).await;
    assert_error(&stolen, 404, "NOT_FOUND");
    let declined_by_other = decline_invitation(&api, &carol, &invitation_id).await;
    assert_error(&declined_by_other, 404, "NOT_FOUND");

    // An address nobody has verified is not proof of being its owner.
    let set_verified = |verified: bool| {
        sqlx::query("UPDATE users SET email_verified = $2 WHERE user_id = $1")
            .bind(bob.user_id)
            .bind(verified)
            .execute(&api.pool)
    };
    set_verified(false).await.unwrap();
    let unverified = accept_invitation(&api, &bob, &invitation_id).await;
    assert_error(&unverified, 403, "FORBIDDEN");
    set_verified(true).await.unwrap();

    let joined = accept_invitation(&api, &bob, &invitation_id).await.ok();
    assert_eq!(joined["teamId"], team_id.as_str());
    assert_eq!(joined["name"], "Writers");
    assert_eq!(joined["role"], "member");
    assert_eq!(api.events_named("team.member_joined").await, 2);
    let bobs_teams = api.query(Some(&bob), "teams/list", json!({})).await.ok();
    assert_eq!(bobs_teams.as_array().unwrap().len(), 1);
    assert_eq!(bobs_teams[0]["role"], "member");
    assert_eq!(
        roles(&api, &bob, &team_id).await.len(),
        2,
        "bob sees both members"
    );
    // Bob's membership syncs to the team and to bob.
    let sets = api.changesets().await;
    for scope in [team_scope(&team_id), user_scope(&bob)] {
        let changes = changes_for(&sets, &scope);
        let bob_row = changes
            .iter()
            .find(|change| change.row_id == member_row_id(&team_id, &bob))
            .unwrap_or_else(|| panic!("no membership change in {scope}"));
        assert_eq!(bob_row.table, "team_members");
        assert_eq!(bob_row.op, ChangeOp::Insert);
        assert_eq!(bob_row.row["role"], "member");
    }

    let again = accept_invitation(&api, &bob, &invitation_id).await;
    assert_error(&again, 409, "INVITATION_NOT_PENDING");
    assert_eq!(invitations_of(&api, &bob).await, json!([]));
    let member_again = invite(&api, &alice, &team_id, "BOB@example.com").await;
    assert_error(&member_again, 409, "ALREADY_MEMBER");

    // A second invitation to a pending address refreshes the first (same id, new role).
    let first = invite(&api, &alice, &team_id, "carol@example.com")
        .await
        .ok();
    let second = api
        .call(
            Some(&alice),
            "teams/invite",
            json!({ "teamId": team_id, "email": "Carol@example.com", "role": "admin" }),
        )
        .await
        .ok();
    assert_eq!(first["teamInvitationId"], second["teamInvitationId"]);
    assert_eq!(second["role"], "admin");
    assert_eq!(api.events_named("team.invitation_created").await, 3);
    let for_carol = invitations_of(&api, &carol).await;
    assert_eq!(for_carol.as_array().unwrap().len(), 1);
    assert_eq!(for_carol[0]["role"], "admin");

    let declined = decline_invitation(&api, &carol, &second["teamInvitationId"])
        .await
        .ok();
    assert_eq!(declined["status"], "declined");
    assert!(declined["respondedAt"].as_i64().is_some());
    let accept_declined = accept_invitation(&api, &carol, &second["teamInvitationId"]).await;
    assert_error(&accept_declined, 409, "INVITATION_NOT_PENDING");
    assert_eq!(invitations_of(&api, &carol).await, json!([]));
    assert_eq!(roles(&api, &alice, &team_id).await.len(), 2);

    // An expired invitation is neither listed nor accepted.
    let dave = api.login("dave@example.com").await;
    let for_dave = invite(&api, &alice, &team_id, "dave@example.com")
        .await
        .ok();
    sqlx::query(
        "UPDATE team_invitations SET expires_at = now() - interval '1 minute'
          WHERE team_invitation_id = $1::uuid",
    )
    .bind(for_dave["teamInvitationId"].as_str().unwrap())
    .execute(&api.pool)
    .await
    .unwrap();
    assert_eq!(invitations_of(&api, &dave).await, json!([]));
    let expired = accept_invitation(&api, &dave, &for_dave["teamInvitationId"]).await;
    assert_error(&expired, 410, "INVITATION_EXPIRED");
    assert_eq!(
        api.query(Some(&dave), "teams/list", json!({})).await.ok(),
        json!([])
    );
    // Re-inviting refreshes the expired one.
    let refreshed = invite(&api, &alice, &team_id, "dave@example.com")
        .await
        .ok();
    assert_eq!(refreshed["teamInvitationId"], for_dave["teamInvitationId"]);
    accept_invitation(&api, &dave, &refreshed["teamInvitationId"])
        .await
        .ok();
    assert_eq!(roles(&api, &alice, &team_id).await.len(), 3);
    api.stop().await;
}
