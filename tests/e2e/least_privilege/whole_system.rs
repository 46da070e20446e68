//! The whole system under its own roles and users.

use std::time::Duration;

use platform::roles::SERVICE_ROLES;
use serde_json::{Value, json};
use test_support::{TestDb, eventually, rpc_ok};

use crate::fixtures::{bootstrap, count, role_url};
use crate::nats_server::AuthNats;

macro_rules! start_as_itself {
    ($krate:ident, $db:expr, $nats:expr) => {{
        let mut config = $krate::Config::for_tests(&role_url($db, $krate::SERVICE), &$nats.url());
        config.common.nats_auth = Some($nats.auth($krate::SERVICE));
        e2e_tests::spawn_in_process($krate::SERVICE, $krate::SCHEMA, |listener, token| {
            $krate::run(config, listener, token)
        })
        .await
    }};
}

/// The five services, each with its own database role and NATS user (the production
/// accounts file), start, become ready and carry an entry, a sign-up notification and a data
/// export (a task, the worker's question to the api, the answer, `export.ready`) through;
/// the NATS server refuses nothing along the way.
#[tokio::test]
async fn the_system_works_under_its_roles_and_users() {
    let db = TestDb::new().await;
    bootstrap(&db).await;
    let nats = AuthNats::start();
    let services = vec![
        start_as_itself!(api, &db, nats),
        start_as_itself!(sync_streamer, &db, nats),
        start_as_itself!(worker, &db, nats),
        start_as_itself!(cron, &db, nats),
        start_as_itself!(notifier, &db, nats),
    ];
    for service in &services {
        let url = format!("{}/readyz", service.base_url);
        let ready = eventually(Duration::from_secs(60), || {
            let url = url.clone();
            async move { test_support::get(&url).await.0 == 200 }
        })
        .await;
        assert!(
            ready,
            "{} never became ready: {:?}; NATS refused {:?}",
            service.name,
            test_support::get(&url).await,
            nats.violations()
        );
    }

    let api_url = services[0].base_url.clone();
    let client = reqwest::Client::new();
    let user = e2e_tests::dev_login(&client, &api_url, "ada@example.com", "Ada").await;
    let entry = rpc_ok(
        &client,
        &api_url,
        &user.token,
        "journalEntries/create",
        json!({"title": "Least privilege", "content": "Each to its own"}),
    )
    .await;
    let export = rpc_ok(
        &client,
        &api_url,
        &user.token,
        "exports/create",
        Value::Null,
    )
    .await;
    let export_id = export["exportId"].as_str().unwrap().to_owned();

    let admin = db.pool().await;
    let entry_id = entry["journalEntryId"].as_str().unwrap().to_owned();
    let flowed = eventually(Duration::from_secs(30), || {
        let admin = admin.clone();
        let entry_id = entry_id.clone();
        async move {
            count(
                &admin,
                &format!(
                    "SELECT count(*) FROM worker.journal_entry_activity \
                     WHERE journal_entry_id::text = '{entry_id}'"
                ),
            )
            .await
                == 1
                && count(&admin, "SELECT count(*) FROM sync.rows").await > 0
                && count(&admin, "SELECT count(*) FROM notifier.recipients").await > 0
        }
    })
    .await;
    assert!(
        flowed,
        "the entry, its sync row or the new user's recipient never arrived; NATS refused {:?}",
        nats.violations()
    );
    let ready = eventually(Duration::from_secs(30), || {
        let client = client.clone();
        let api_url = api_url.clone();
        let token = user.token.clone();
        let export_id = export_id.clone();
        async move {
            rpc_ok(
                &client,
                &api_url,
                &token,
                "exports/get",
                json!({"exportId": export_id}),
            )
            .await["status"]
                == "ready"
        }
    })
    .await;
    assert!(
        ready,
        "the export never became ready; NATS refused {:?}",
        nats.violations()
    );
    assert_eq!(
        count(&admin, "SELECT count(*) FROM worker.dead_letters").await
            + count(&admin, "SELECT count(*) FROM api.dead_letters").await
            + count(&admin, "SELECT count(*) FROM notifier.dead_letters").await,
        0,
        "nothing was dead-lettered"
    );
    assert_eq!(
        nats.violations(),
        Vec::<String>::new(),
        "NATS refused something"
    );
    admin.close().await;

    for service in services {
        service.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(20), service.handle)
            .await
            .unwrap_or_else(|_| panic!("{} did not stop", service.name))
            .unwrap();
        assert!(result.is_ok(), "{}: {result:?}", service.name);
    }
    assert_eq!(
        nats.violations(),
        Vec::<String>::new(),
        "NATS refused something"
    );
}

#[test]
fn every_service_has_a_role_and_a_nats_user_of_the_same_name() {
    let users: Vec<(&str, &str)> = bus::permissions::service_permissions()
        .iter()
        .map(|permissions| (permissions.service, permissions.user))
        .collect();
    let roles: Vec<(&str, &str)> = SERVICE_ROLES
        .iter()
        .map(|role| (role.service, role.role))
        .collect();
    assert_eq!(users, roles);
}
