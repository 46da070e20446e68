//! Helpers shared by the attachment tests.

use messages::sync::v1::Changeset;
use prost::Message;
use serde_json::Value;

use crate::common::System;

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
