//! A steady stream of creates over the api's oRPC endpoint from a few users, every
//! acknowledged one recorded.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::User;

/// How one create ended.
#[derive(Debug)]
pub enum Outcome {
    /// 200 with the new entry's id.
    Acknowledged(String),
    /// An answer other than 200: its status and error code.
    Refused(u16, String),
    /// No answer (connection refused or cut, or no answer within the timeout).
    NoAnswer,
}

/// `journalEntries/create` as `session`.
pub async fn create_entry(
    client: &reqwest::Client,
    api: &str,
    session: &str,
    title: &str,
) -> Outcome {
    let request = client
        .post(format!("{api}/rpc/journalEntries/create"))
        .bearer_auth(session)
        .json(&json!({"json": {"title": title, "content": "a drill entry of seven words"}}));
    let Ok(response) = request.send().await else {
        return Outcome::NoAnswer;
    };
    let status = response.status().as_u16();
    let Ok(body) = response.json::<Value>().await else {
        return Outcome::NoAnswer;
    };
    if status == 200 {
        let id = body["json"]["journalEntryId"]
            .as_str()
            .unwrap_or_else(|| panic!("a 200 without an entry id: {body}"));
        Outcome::Acknowledged(id.to_owned())
    } else {
        let code = body["json"]["code"].as_str().unwrap_or("").to_owned();
        Outcome::Refused(status, code)
    }
}

/// What the load did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Ids of the entries whose create was answered 200.
    pub acknowledged: Vec<String>,
    /// Creates not acknowledged, by how they ended (`503 SERVICE_UNAVAILABLE`, `no answer`).
    pub refusals: BTreeMap<String, usize>,
}

/// One writer per user, each creating an entry every `period`.
pub struct Load {
    stop: CancellationToken,
    writers: Vec<JoinHandle<LoadReport>>,
}

impl Load {
    pub fn start(api: &str, users: &[User], period: Duration) -> Self {
        let stop = CancellationToken::new();
        let writers = users
            .iter()
            .enumerate()
            .map(|(index, user)| {
                let api = api.to_owned();
                let session = user.session.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .expect("http client");
                    let mut report = LoadReport::default();
                    let mut ticks = tokio::time::interval(period);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    for number in 0.. {
                        tokio::select! {
                            _ = ticks.tick() => {}
                            () = stop.cancelled() => break,
                        }
                        let title = format!("drill writer {index} entry {number}");
                        match create_entry(&client, &api, &session, &title).await {
                            Outcome::Acknowledged(id) => report.acknowledged.push(id),
                            Outcome::Refused(status, code) => {
                                *report
                                    .refusals
                                    .entry(format!("{status} {code}"))
                                    .or_default() += 1;
                            }
                            Outcome::NoAnswer => {
                                *report.refusals.entry("no answer".to_owned()).or_default() += 1;
                            }
                        }
                    }
                    report
                })
            })
            .collect();
        Self { stop, writers }
    }

    /// Stop writing; what every writer did.
    pub async fn finish(self) -> LoadReport {
        self.stop.cancel();
        let mut total = LoadReport::default();
        for writer in self.writers {
            let report = writer.await.expect("a writer panicked");
            total.acknowledged.extend(report.acknowledged);
            for (kind, count) in report.refusals {
                *total.refusals.entry(kind).or_default() += count;
            }
        }
        total
    }
}

impl LoadReport {
    /// Writes may be refused while a fault lasts, but only as "come back later": a 503 or no
    /// answer (the api was killed). Anything else (a 500) is a bug the fault exposed.
    pub fn assert_refusals_only_unavailable(&self) {
        let unexpected: Vec<(&String, &usize)> = self
            .refusals
            .iter()
            .filter(|(kind, _)| !kind.starts_with("503 ") && kind.as_str() != "no answer")
            .collect();
        assert!(
            unexpected.is_empty(),
            "writes refused other than as unavailable: {unexpected:?}"
        );
    }
}
