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

/// The status the migrations processor gives a migration it cannot run (its clinic does not
/// exist, or its user has another one running). clinic.v1's `migrationStatus.v1` has no such
/// value: an extension the served document states, with [`Migration`]'s `failureReason`.
pub const FAILED: &str = "FAILED";

/// A migration as `migration.v1` answers it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Migration {
    user_id: String,
    #[schema(schema_with = status_schema)]
    status: String,
    created_time: String,
    updated_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    attestation_time: Option<String>,
    /// Extension (not in clinic.v1): why a `FAILED` migration failed; only on those.
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<String>,
}

/// The served schema of a migration's `status`: clinic.v1's `migrationStatus.v1` and `FAILED`.
fn status_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(STATUSES.into_iter().chain([FAILED])))
        .description(Some(
            "clinic.v1's migrationStatus.v1, extended with FAILED: final, set by the migrations \
             processor when it cannot run the migration (failureReason says why); nothing was \
             moved",
        ))
        .build()
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
            failure_reason: migration
                .get_str("failureReason")
                .ok()
                .filter(|_| migration.get_str("status") == Ok(FAILED))
                .map(str::to_owned),
        }
    }
}
