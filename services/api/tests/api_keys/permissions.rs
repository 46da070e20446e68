//! Roles and the sensitive tier guard every API key procedure.

use serde_json::json;

use crate::common::TestApi;
use crate::fixtures::create_key;

#[tokio::test]
async fn roles_and_the_sensitive_tier_guard_every_procedure() {
    let api = TestApi::start().await;
    let (owner, admin, member, outsider, team_id) = api.team_of_every_role().await;
    let team = json!({ "teamId": team_id });

    // Enabling: owners and admins.
    let by_member = api
        .call(Some(&member), "apiTeams/enable", team.clone())
        .await;
    assert_eq!(by_member.status, 403);
    assert_eq!(by_member.code(), "FORBIDDEN");
    let by_outsider = api
        .call(Some(&outsider), "apiTeams/enable", team.clone())
        .await;
    assert_eq!(by_outsider.code(), "NOT_FOUND");
    let no_session = api.call(None, "apiTeams/enable", team.clone()).await;
    assert_eq!(no_session.status, 401);
    let allowlist_early = api
        .call(
            Some(&owner),
            "apiTeams/setIpAllowlist",
            json!({ "teamId": team_id, "cidrs": [] }),
        )
        .await;
    assert_eq!(allowlist_early.code(), "API_NOT_ENABLED");
    api.call(Some(&admin), "apiTeams/enable", team.clone())
        .await
        .ok();

    // Keys: admins create and revoke; members read; outsiders see nothing.
    let (_, by_admin) = create_key(&api, &admin, &team_id, "admin's").await;
    let key_id = json!({ "apiKeyId": by_admin["apiKeyId"] });
    let member_create = api
        .call(
            Some(&member),
            "apiKeys/create",
            json!({ "teamId": team_id, "name": "nope" }),
        )
        .await;
    assert_eq!(member_create.code(), "FORBIDDEN");
    let member_allowlist = api
        .call(
            Some(&member),
            "apiTeams/setIpAllowlist",
            json!({ "teamId": team_id, "cidrs": ["10.0.0.0/8"] }),
        )
        .await;
    assert_eq!(member_allowlist.code(), "FORBIDDEN");
    assert_eq!(
        api.call(Some(&member), "apiKeys/revoke", key_id.clone())
            .await
            .code(),
        "FORBIDDEN"
    );
    let listed = api
        .query(Some(&member), "apiKeys/list", team.clone())
        .await
        .ok();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let seen = api
        .query(Some(&member), "apiTeams/get", team.clone())
        .await
        .ok();
    assert_eq!(seen["plan"]["planId"], "free");
    assert_eq!(
        api.query(Some(&outsider), "apiTeams/get", team.clone())
            .await
            .code(),
        "NOT_FOUND"
    );
    assert_eq!(
        api.query(Some(&outsider), "apiKeys/list", team.clone())
            .await
            .code(),
        "NOT_FOUND"
    );
    let outsider_revoke = api
        .call(Some(&outsider), "apiKeys/revoke", key_id.clone())
        .await;
    assert_eq!(outsider_revoke.status, 404);
    assert_eq!(outsider_revoke.code(), "NOT_FOUND");
    let unknown = api
        .call(
            Some(&owner),
            "apiKeys/revoke",
            json!({ "apiKeyId": uuid::Uuid::new_v4() }),
        )
        .await;
    assert_eq!(unknown.code(), "NOT_FOUND");

    // Sensitive: an old session may read, not enable (issue 15: enabling hands out API
    // access), create, revoke or change networks.
    api.age_sessions(&admin).await;
    for (procedure, input) in [
        ("apiTeams/enable", team.clone()),
        (
            "apiKeys/create",
            json!({ "teamId": team_id, "name": "stale" }),
        ),
        ("apiKeys/revoke", key_id.clone()),
        (
            "apiTeams/setIpAllowlist",
            json!({ "teamId": team_id, "cidrs": [] }),
        ),
    ] {
        let stale = api.call(Some(&admin), procedure, input).await;
        assert_eq!(stale.status, 403, "{procedure}");
        assert_eq!(stale.code(), "SESSION_NOT_FRESH", "{procedure}");
    }
    api.query(Some(&admin), "apiKeys/list", team.clone())
        .await
        .ok();
    // The owner's fresh session still can.
    let revoked = api
        .call(Some(&owner), "apiKeys/revoke", key_id.clone())
        .await
        .ok();
    assert!(revoked["revokedAt"].is_i64());
    api.stop().await;
}
