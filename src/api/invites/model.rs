//! A patient's invitation of a clinic ([`Invitation`], hydrophone's request) and the stored
//! invite as answered ([`Confirmation`], `confirmation.v1`).

use bson::Document;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::patients::Permissions;
use crate::api::time;

/// The invitation a patient sends.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Invitation {
    /// The clinic's share code.
    pub share_code: String,
    /// What the patient offers (not `custodian`).
    pub permissions: Permissions,
    /// The patient's name, which the clinic's patient record needs (the reference takes it from
    /// the profile service).
    pub full_name: String,
    /// The patient's birth date, `YYYY-MM-DD`.
    pub birth_date: String,
}

/// A stored invite as `confirmation.v1`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Confirmation {
    key: String,
    #[serde(rename = "type")]
    kind: String,
    status: String,
    email: String,
    creator_id: String,
    created: String,
    modified: String,
    /// Hydrophone carries the offered permissions as JSON text.
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<String>,
}

impl From<&Document> for Confirmation {
    fn from(invite: &Document) -> Self {
        let text = |field: &str| crate::documents::text(invite, field);
        Self {
            key: text("key").unwrap_or_default(),
            kind: "careteam_invitation".to_owned(),
            status: text("status").unwrap_or_else(|| "pending".to_owned()),
            email: text("email").unwrap_or_default(),
            creator_id: text("creatorId").unwrap_or_default(),
            created: time::text(invite.get_datetime("created").ok()),
            modified: time::text(invite.get_datetime("modified").ok()),
            context: invite.get_document("permissions").ok().map(|grants| {
                let offered = Permissions::of(grants.keys().map(String::as_str));
                serde_json::to_string(&offered).unwrap_or_default()
            }),
        }
    }
}
