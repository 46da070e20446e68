//! Users are identified, and invitations and exports reach them.

use std::time::Duration;

use bus::Bus;
use messages::journal::v1::{ExportReady, TeamInvitationCreated, UserCreated, UserProfileUpdated};
use serde_json::json;
use test_support::eventually;
use uuid::Uuid;

use crate::fixtures::Fixture;

#[tokio::test]
async fn users_are_identified_and_invitations_and_exports_reach_them() {
    let fixture = Fixture::start(|_| {}).await;
    let user_id = Uuid::new_v4();
    let publish = |version: i64, name: &str| UserProfileUpdated {
        user_id: user_id.to_string(),
        email: "grace@example.com".into(),
        name: name.into(),
        timezone: "Europe/Paris".into(),
        version,
    };
    fixture
        .bus
        .publish(
            &UserCreated {
                user_id: user_id.to_string(),
                via: "dev".into(),
                email: "grace@example.com".into(),
                name: "Grace".into(),
                timezone: "UTC".into(),
                version: 1,
            },
            &Uuid::now_v7().to_string(),
        )
        .await
        .unwrap();
    let profile_named = |name: &'static str| {
        let stand_in = fixture.stand_in.clone();
        move || {
            let stand_in = stand_in.clone();
            async move {
                stand_in
                    .profiles()
                    .iter()
                    .any(|(_, profile)| profile["name"] == json!(name))
            }
        }
    };
    assert!(eventually(Duration::from_secs(20), profile_named("Grace")).await);
    let (distinct_id, profile) = fixture.stand_in.profiles()[0].clone();
    assert_eq!(distinct_id, user_id.to_string());
    assert_eq!(
        profile,
        json!({"$email": ["grace@example.com"], "name": "Grace", "$timezone": "UTC"})
    );

    fixture
        .bus
        .publish(&publish(3, "Grace Hopper"), &Uuid::now_v7().to_string())
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(20), profile_named("Grace Hopper")).await);
    // A late, older profile is recorded nowhere and sent nowhere.
    let stale_id = Uuid::now_v7().to_string();
    fixture
        .bus
        .publish(&publish(2, "Stale Name"), &stale_id)
        .await
        .unwrap();
    // Wait until the stale event was handled (delivered and acked), then look.
    let handled = eventually(Duration::from_secs(10), || {
        consumer_idle(&fixture.bus, "notifier--user_profile_updated")
    })
    .await;
    assert!(handled);
    assert_eq!(fixture.stand_in.profiles().len(), 2);
    let name: String = sqlx::query_scalar("SELECT name FROM recipients WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(&fixture.pool)
        .await
        .unwrap();
    assert_eq!(name, "Grace Hopper");

    // An export for that user carries the address and name the notifier learnt.
    fixture
        .bus
        .publish(
            &ExportReady {
                export_id: "export-1".into(),
                user_id: user_id.to_string(),
                download_url: "http://127.0.0.1:9/exports/export-1.json?sig=x".into(),
                expires_at_ms: 1_800_000_000_000,
                size_bytes: 1234,
            },
            &Uuid::now_v7().to_string(),
        )
        .await
        .unwrap();
    // Invitations: one to the known address (their account), one to a stranger.
    for (invitation, email) in [("inv-1", "GRACE@example.com"), ("inv-2", "new@example.com")] {
        fixture
            .bus
            .publish(
                &TeamInvitationCreated {
                    team_invitation_id: invitation.into(),
                    team_id: "team-1".into(),
                    team_name: "Navy".into(),
                    email: email.into(),
                    role: "member".into(),
                    invited_by_user_id: "someone".into(),
                    invited_by_name: "Ada".into(),
                    expires_at_ms: 1_800_000_000_000,
                },
                &Uuid::now_v7().to_string(),
            )
            .await
            .unwrap();
    }
    let all_sent = eventually(Duration::from_secs(20), || async {
        fixture.stand_in.runs().len() == 3
    })
    .await;
    assert!(all_sent, "{:?}", fixture.stand_in.received());
    let runs = fixture.stand_in.runs();
    let by_workflow = |workflow: &str| -> Vec<serde_json::Value> {
        runs.iter()
            .filter(|run| run["workflow"] == json!(workflow))
            .cloned()
            .collect()
    };
    let export = &by_workflow("export-ready")[0];
    assert_eq!(
        export["recipients"],
        json!([{"distinct_id": user_id.to_string(), "$email": ["grace@example.com"], "name": "Grace Hopper"}])
    );
    assert_eq!(
        export["data"]["download_url"],
        json!("http://127.0.0.1:9/exports/export-1.json?sig=x")
    );
    let mut invitations = by_workflow("team-invitation");
    invitations.sort_by_key(|run| run["data"]["team_invitation_id"].to_string());
    assert_eq!(
        invitations[0]["recipients"][0]["distinct_id"],
        json!(user_id.to_string())
    );
    assert_eq!(
        invitations[1]["recipients"][0]["distinct_id"],
        json!("new@example.com")
    );
    assert_eq!(invitations[1]["data"]["team_name"], json!("Navy"));
    fixture.stop().await;
}

/// The consumer has delivered everything and holds no unacknowledged message.
async fn consumer_idle(bus: &Bus, consumer: &str) -> bool {
    let Ok(stream) = bus.jetstream().get_stream(bus.stream_name("EVENTS")).await else {
        return false;
    };
    let Ok(mut consumer) = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(consumer)
        .await
    else {
        return false;
    };
    let Ok(info) = consumer.info().await else {
        return false;
    };
    info.num_pending == 0 && info.num_ack_pending == 0 && info.delivered.stream_sequence > 0
}
