//! An export as clients see it and the procedures' inputs.

use domain::ids::ExportId;
use domain::time::EpochMillis;
use serde::{Deserialize, Serialize};

use crate::http::validation::Input;

/// An export as clients see it.
#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Export {
    pub export_id: ExportId,
    /// `pending`, `ready`, `expired` (ready, but the download link has expired) or `revoked`
    /// (the account was deleted: the archive is gone).
    pub status: String,
    /// Epoch milliseconds.
    pub requested_at: EpochMillis,
    pub ready_at: Option<EpochMillis>,
    pub size_bytes: Option<i64>,
    /// The presigned download link, while it is valid.
    pub download_url: Option<String>,
    pub expires_at: Option<EpochMillis>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetInput {
    pub export_id: ExportId,
}

impl Input for GetInput {}
