//! Which HTTP methods a procedure takes: a mutation runs only on POST.

use reqwest::Method;
use serde_json::Value;

use crate::HOSTILE_ORIGIN;
use crate::common::TestApi;

/// A mutation with a valid session cookie and a hostile origin, by any method but POST (and
/// GET for queries), is 405 and runs nothing: `curl -I /rpc/users/delete` used to delete
/// the account (the CSRF check exempts HEAD, and the route ran on any method).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_runs_only_on_post_whatever_the_cookie_and_origin() {
    let api = TestApi::start().await;
    let user = api.login("csrf@example.com").await;
    for procedure in [
        "users/delete",
        "auth/revokeAllSessions",
        "auth/logout",
        "exports/create",
    ] {
        for method in [
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::GET,
            Method::PATCH,
        ] {
            let response = api
                .client
                .request(method.clone(), format!("{}/rpc/{procedure}", api.base_url))
                .header("cookie", format!("session={}", user.token))
                .header("origin", HOSTILE_ORIGIN)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 405, "{method} /rpc/{procedure}");
            if method != Method::HEAD {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["json"]["code"], "METHOD_NOT_SUPPORTED");
                assert_eq!(body["json"]["status"], 405);
            }
        }
    }
    // OPTIONS is a CORS preflight, answered by the CORS layer without running anything.
    let options = api
        .client
        .request(
            Method::OPTIONS,
            format!("{}/rpc/users/delete", api.base_url),
        )
        .header("cookie", format!("session={}", user.token))
        .header("origin", HOSTILE_ORIGIN)
        .send()
        .await
        .unwrap();
    assert!(
        matches!(options.status().as_u16(), 200 | 405),
        "{}",
        options.status()
    );
    // The account, its session and its exports are all still there.
    let me = api.query(Some(&user), "users/me", Value::Null).await.ok();
    assert_eq!(me["userId"], user.user_id.to_string());
    let exports = api
        .query(Some(&user), "exports/list", Value::Null)
        .await
        .ok();
    assert_eq!(exports.as_array().map(Vec::len), Some(0), "{exports}");
    // A query still answers GET and POST, but not HEAD.
    let head = api
        .client
        .head(format!("{}/rpc/users/me", api.base_url))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 405);
    api.call(Some(&user), "users/me", Value::Null).await.ok();
    api.stop().await;
}

/// The procedures the router declares: every one is a query or a mutation, and a
/// mutation's GET is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_declared_procedure_refuses_the_methods_it_does_not_take() {
    let api = TestApi::start().await;
    let user = api.login("methods@example.com").await;
    let procedures = api::rpc_procedures();
    assert!(procedures.len() > 40, "{procedures:?}");
    for procedure in &procedures {
        let url = format!("{}{}", api.base_url, procedure.path());
        for method in [Method::HEAD, Method::PUT, Method::DELETE, Method::PATCH] {
            let response = api
                .client
                .request(method.clone(), &url)
                .bearer_auth(&user.token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 405, "{method} {url}");
        }
        let get = api
            .client
            .get(&url)
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap();
        match procedure.kind {
            api::http::rpc::Kind::Mutation => assert_eq!(get.status(), 405, "GET {url}"),
            api::http::rpc::Kind::Query => assert_ne!(get.status(), 405, "GET {url}"),
        }
    }
    api.stop().await;
}
