//! `migration.v1` and its requests: [`Trigger`] (`triggerMigration.v1`), [`NewMigration`]
//! (`migration.v1`'s `userId`), [`StatusUpdate`] (`migrationUpdate.v1`), and what is answered
//! ([`Migration`]).

use bson::Document;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::time;

/// The statuses, in the only order they may take.
pub const STATUSES: [&str; 3] = ["PENDING", "RUNNING", "COMPLETED"];

/// `triggerMigration.v1`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// The admin attests the clinic's data may be migrated.
    pub attestation_submitted: Option<bool>,
}

/// `migration.v1` as a request (`userId`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewMigration {
    /// The legacy clinician's user id.
    pub user_id: Option<String>,
}

/// `migrationUpdate.v1`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StatusUpdate {
    /// One of [`STATUSES`], not before the current one.
    pub status: String,
}

/// A migration as `migration.v1` answers it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Migration {
    user_id: String,
    status: String,
    created_time: String,
    updated_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    attestation_time: Option<String>,
}

impl From<&Document> for Migration {
    fn from(migration: &Document) -> Self {
        Self {
            user_id: migration.get_str("userId").unwrap_or_default().to_owned(),
            status: migration.get_str("status").unwrap_or("PENDING").to_owned(),
            created_time: time::text(migration.get_datetime("createdTime").ok()),
            updated_time: time::text(migration.get_datetime("updatedTime").ok()),
            attestation_time: migration
                .get_datetime("attestationTime")
                .ok()
                .map(|at| time::text(Some(at))),
        }
    }
}
