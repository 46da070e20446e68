//! Helpers shared by the attachment tests.

use messages::sync::v1::Changeset;
use prost::Message;
use serde_json::{Value, json};

use crate::common::{CRON_SECRET, System, User};

/// The api (with the cron secret set, to run the retention purge) and the worker.
pub(crate) async fn start_with_cron_secret() -> System {
    System::start_both(
        |api| api.cron_job_secret = Some(secrecy::SecretString::from(CRON_SECRET)),
        |_| {},
    )
    .await
}

/// `user` calls `procedure` with `input`: refused with `status` and the error `code`.
pub(crate) async fn assert_refused(
    system: &System,
    user: &User,
    procedure: &str,
    input: Value,
    status: u16,
    code: &str,
) {
    let (answered, error) = system.call(user, procedure, input.clone()).await;
    assert_eq!(
        (answered, error["code"].as_str()),
        (status, Some(code)),
        "{procedure} {input}"
    );
}

/// The input of `cdn.createUploadUrl` for a file.
pub(crate) fn upload_input(file_name: &str, content_type: &str, size_bytes: i64) -> Value {
    json!({"fileName": file_name, "contentType": content_type, "sizeBytes": size_bytes})
}

/// A plain HTTP GET of `url`, as an app downloads.
pub(crate) async fn get_url(system: &System, url: &Value) -> reqwest::Response {
    system
        .client
        .get(url.as_str().unwrap())
        .send()
        .await
        .unwrap()
}

pub(crate) fn id(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap().to_owned()
}

/// The `attachments` rows in the api's changesets: (scope, op, row).
pub(crate) async fn attachment_changes(system: &System) -> Vec<(String, i32, Value)> {
    let payloads: Vec<Vec<u8>> = system
        .api_emitted("CHANGES", "changes.")
        .await
        .into_iter()
        .map(|message| message.payload)
        .collect();
    payloads
        .iter()
        .flat_map(|payload| {
            let changeset = Changeset::decode(payload.as_slice()).unwrap();
            let scope = changeset.scope.clone();
            changeset
                .changes
                .into_iter()
                .filter(|change| change.table == "attachments")
                .map(move |change| {
                    (
                        scope.clone(),
                        change.op,
                        serde_json::from_slice(&change.row_json).unwrap(),
                    )
                })
        })
        .collect()
}
