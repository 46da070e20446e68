//! `open-api-create`: the metered, logged `POST /api/v1/journal-entries` with a valid key,
//! against the RPC create of the same api (`rpc-create`'s RPC variant) as the reference, and
//! the uncached-key path on its own.
//!
//! The real api runs in the bench process as in `rpc-create` (its own database and bus
//! namespace, dropped at the end). User 0 owns a team with API access on a plan of its own
//! (`bench`: no quota or rate the run can reach, so every request does the full work:
//! key check, rate check, quota `UPDATE`, entry + event + changeset transaction, request log).
//!
//! Variants (closed loop, 64 connections each):
//! - `rpc-create` / `journalEntries.create`: the reference, 64 users' sessions.
//! - `open-api-create` / `cached key`: all 64 connections present one key, verified once and
//!   then served from the verifier's cache.
//! - `open-api-create-uncached` / `uncached keys`: a second api with its key cache off
//!   (`API_KEY_CACHE_CAPACITY=0`) and 64 keys, one per connection: every request runs a
//!   scrypt, bounded by `API_KEY_SCRYPT_CONCURRENCY` (the number of CPUs).
//!
//! Targets: cached ≥ 60 % of the RPC create's throughput, p99 < 40 ms.

use std::sync::Arc;

use anyhow::Context as _;

use crate::context::BenchContext;
use crate::measure::ClosedLoop;
use crate::report::Measurement;
use crate::scenario::Scenario;
use crate::scenarios::api_client::{CreateCall, ensure_some_succeeded, load_client, percent};
use crate::scenarios::api_rig::{ApiRig, CONCURRENCY};
use crate::scenarios::ceiling::make_content;
use crate::scenarios::rpc_create::{CONTENT_BYTES, TITLE, measure_rpc};

const NAME: &str = "open-api-create";
const UNCACHED_NAME: &str = "open-api-create-uncached";
const TARGET_RATIO: f64 = 0.60;
const TARGET_P99_MS: f64 = 40.0;

pub struct OpenApiCreate;

impl Scenario for OpenApiCreate {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "POST /api/v1/journal-entries (key check, rate, quota, request log, entry + event + changeset) at 64 connections with a cached key, vs the RPC create; and with the key cache off (one scrypt per request)"
    }

    async fn run(&self, ctx: &BenchContext) -> anyhow::Result<Vec<Measurement>> {
        let content: Arc<str> = make_content(CONTENT_BYTES).into();
        let mut measurements = Vec::with_capacity(3);

        let rig = ApiRig::start(ctx).await?;
        let (rpc, rest) = rig
            .run_then_stop(async |rig| {
                let keys = api_keys(rig, 1).await?;
                rig.reset().await?;
                eprintln!("{NAME}: rpc-create reference ...");
                let rpc = measure_rpc(ctx, rig, &content).await?;
                eprintln!("{NAME}: rpc-create: {}", rpc.summary());
                ensure_some_succeeded(&rpc)?;
                rig.reset().await?;
                eprintln!("{NAME}: POST /api/v1/journal-entries with one cached key ...");
                let rest = measure_rest(ctx, rig, &content, &keys, NAME, "cached key").await?;
                eprintln!("{NAME}: cached key: {}", rest.summary());
                rig.print_rows(NAME).await;
                ensure_some_succeeded(&rest)?;
                Ok((rpc, rest))
            })
            .await?;

        let ratio = percent(rest.ops_per_sec, rpc.ops_per_sec) / 100.0;
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        eprintln!(
            "{NAME}: open API / RPC = {:.0} / {:.0} ops/s = {:.1} % (target ≥ {:.0} %: {}); open API p99 {:.3} ms (target < {TARGET_P99_MS} ms: {})",
            rest.ops_per_sec,
            rpc.ops_per_sec,
            ratio * 100.0,
            TARGET_RATIO * 100.0,
            met(ratio >= TARGET_RATIO),
            rest.p99_ms,
            met(rest.p99_ms < TARGET_P99_MS),
        );
        measurements.push(rpc);
        measurements.push(rest);

        let rig = ApiRig::start_with(ctx, |config| config.api_keys.cache_capacity = 0).await?;
        let uncached = rig
            .run_then_stop(async |rig| {
                let keys = api_keys(rig, CONCURRENCY).await?;
                rig.reset().await?;
                eprintln!(
                    "{UNCACHED_NAME}: POST /api/v1/journal-entries, key cache off, one key per connection ..."
                );
                let rest =
                    measure_rest(ctx, rig, &content, &keys, UNCACHED_NAME, "uncached keys").await?;
                eprintln!("{UNCACHED_NAME}: uncached keys: {}", rest.summary());
                ensure_some_succeeded(&rest)?;
                Ok(rest)
            })
            .await?;
        measurements.push(uncached);
        Ok(measurements)
    }
}

/// A team of user 0 with API access on the `bench` plan, and `count` keys of it.
async fn api_keys(rig: &ApiRig, count: usize) -> anyhow::Result<Arc<[String]>> {
    let client = reqwest::Client::new();
    let token = rig.tokens.first().context("no signed-in user")?;
    let call = |procedure: &'static str, input: serde_json::Value| {
        let client = client.clone();
        let url = format!("{}/rpc/{procedure}", rig.base_url);
        async move {
            let answer: serde_json::Value = client
                .post(url)
                .bearer_auth(token)
                .json(&serde_json::json!({ "json": input }))
                .send()
                .await
                .with_context(|| format!("calling {procedure}"))?
                .error_for_status()
                .with_context(|| format!("calling {procedure}"))?
                .json()
                .await
                .with_context(|| format!("reading {procedure}'s answer"))?;
            anyhow::Ok(answer["json"].clone())
        }
    };
    let team = call("teams/create", serde_json::json!({ "name": "Bench" })).await?;
    let team_id = team["teamId"]
        .as_str()
        .context("teams.create: no teamId")?
        .to_owned();
    call("apiTeams/enable", serde_json::json!({ "teamId": team_id })).await?;
    sqlx::query(
        "INSERT INTO plans (plan_id, name, monthly_request_quota, requests_per_second)
         VALUES ('bench', 'Bench', 1000000000000, 1000000) ON CONFLICT (plan_id) DO NOTHING",
    )
    .execute(&rig.pool)
    .await
    .context("creating the bench plan")?;
    sqlx::query("UPDATE subscriptions SET plan_id = 'bench'")
        .execute(&rig.pool)
        .await
        .context("moving the API team to the bench plan")?;
    let mut keys = Vec::with_capacity(count);
    for n in 0..count {
        let created = call(
            "apiKeys/create",
            serde_json::json!({ "teamId": team_id, "name": format!("bench {n}") }),
        )
        .await?;
        let key = created["key"].as_str().context("apiKeys.create: no key")?;
        keys.push(key.to_owned());
    }
    Ok(keys.into())
}

/// 64 tasks, each on its own keep-alive connection, POST an entry with key `keys[worker %
/// keys.len()]`; success is a `201` whose body is the entry.
async fn measure_rest(
    ctx: &BenchContext,
    rig: &ApiRig,
    content: &str,
    keys: &Arc<[String]>,
    scenario: &'static str,
    variant: &'static str,
) -> anyhow::Result<Measurement> {
    anyhow::ensure!(!keys.is_empty(), "no API key");
    let client = load_client(CONCURRENCY * 2)?;
    let url: Arc<str> = format!("{}/api/v1/journal-entries", rig.base_url).into();
    let body: Arc<str> = serde_json::json!({ "title": TITLE, "content": content })
        .to_string()
        .into();
    let keys = Arc::clone(keys);
    let load = ClosedLoop::new(ctx, CONCURRENCY)
        .run(move |op| {
            let client = client.clone();
            let url = Arc::clone(&url);
            let body = Arc::clone(&body);
            let keys = Arc::clone(&keys);
            async move {
                let key = &keys[op.worker % keys.len()];
                CreateCall {
                    url: &url,
                    credential: ("x-api-key", key),
                    body: &body,
                    status: reqwest::StatusCode::CREATED,
                    answer_prefix: br#"{"journalEntryId":""#,
                }
                .send(&client)
                .await
            }
        })
        .await?;
    Ok(Measurement::from_load(scenario, variant, &load))
}
