//! Postgres unreachable or stopped: 503 with `Retry-After`, never a 500.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::TestApi;

/// Postgres unreachable is `503 SERVICE_UNAVAILABLE` with `Retry-After`, on RPC and on the
/// open API: the pool's errors (here: a pool pointed at a port nobody listens on, so the
/// connect fails with an I/O error, and a pool whose acquire times out) are not bugs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_is_service_unavailable_with_retry_after() {
    use axum::response::IntoResponse;

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy(&format!(
            "postgres://nobody:nothing@127.0.0.1:{closed}/none"
        ))
        .unwrap();
    let error = api::modules::users::store::load(&pool, domain::ids::UserId::generate())
        .await
        .unwrap_err();
    assert!(
        matches!(error, api::http::error::ApiError::Unavailable(_)),
        "{error:?}"
    );
    for response in [
        error.into_response(),
        api::http::rest::RestError(api::http::error::ApiError::from(sqlx::Error::PoolTimedOut))
            .into_response(),
    ] {
        assert_eq!(response.status(), 503);
        assert_eq!(
            response.headers()["retry-after"],
            api::http::error::UNAVAILABLE_RETRY_AFTER_SECONDS.to_string()
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        let error = body.get("json").unwrap_or(&body);
        assert_eq!(error["code"], "SERVICE_UNAVAILABLE", "{body}");
    }
    // An administrator's shutdown of the backend (SQLSTATE 57P01, "terminating connection
    // due to administrator command"), seen on a live connection.
    let api = TestApi::start().await;
    let mut victim = api.pool.acquire().await.unwrap();
    let victim_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *victim)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(victim_pid)
        .execute(&api.pool)
        .await
        .unwrap();
    let terminated = sqlx::query("SELECT 1")
        .execute(&mut *victim)
        .await
        .unwrap_err();
    assert!(
        api::http::error::is_database_unavailable(&terminated),
        "{terminated:?}"
    );
    assert_eq!(api::http::error::ApiError::from(terminated).status(), 503);
    drop(victim);
    api.stop().await;
}

/// The running service, its Postgres stopped: RPC and the open API answer 503 with
/// `Retry-After` (they answered 500 `INTERNAL_SERVER_ERROR`), and recover when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_answers_503_while_its_postgres_is_down() {
    let mut postgres = test_support::PrivatePostgres::start();
    let api = TestApi::start_on(test_support::TestDb::on_server(&postgres.admin_url()).await).await;
    let owner = api.login("outage@example.com").await;
    let team_id = api.team_with(&owner, &[]).await;
    let key = api.api_key_of(&owner, &team_id, "k").await.key;
    let whoami = || {
        api.client
            .get(format!("{}/api/v1/whoami", api.base_url))
            .header("x-api-key", &key)
            .send()
    };
    assert_eq!(whoami().await.unwrap().status(), 200);

    postgres.stop();
    let rpc = api
        .client
        .post(format!("{}/rpc/users/me", api.base_url))
        .bearer_auth(&owner.token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(rpc.status(), 503);
    assert!(rpc.headers().contains_key("retry-after"));
    let body: Value = rpc.json().await.unwrap();
    assert_eq!(body["json"]["code"], "SERVICE_UNAVAILABLE", "{body}");
    assert_eq!(body["json"]["status"], 503);
    let rest = whoami().await.unwrap();
    assert_eq!(rest.status(), 503);
    assert!(rest.headers().contains_key("retry-after"));
    let body: Value = rest.json().await.unwrap();
    assert_eq!(body["code"], "SERVICE_UNAVAILABLE", "{body}");

    postgres.resume();
    let recovered = test_support::eventually(Duration::from_secs(30), || async {
        api.call(Some(&owner), "users/me", json!(null)).await.status == 200
    })
    .await;
    assert!(
        recovered,
        "the api did not recover after Postgres came back"
    );
    api.stop().await;
}
