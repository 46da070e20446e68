//! An export as clients see it and the procedures' inputs.

use chrono::{DateTime, Utc};
use domain::ids::ExportId;
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
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    pub requested_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    #[schemars(with = "Option<i64>")]
    pub ready_at: Option<DateTime<Utc>>,
    pub size_bytes: Option<i64>,
    /// The presigned download link, while it is valid.
    pub download_url: Option<String>,
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    #[schemars(with = "Option<i64>")]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetInput {
    pub export_id: ExportId,
}

impl Input for GetInput {}
