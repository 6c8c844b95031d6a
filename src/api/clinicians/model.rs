//! `clinician.v1` both ways: [`NewClinician`] and [`ClinicianUpdate`] (what a request may
//! set, validated) and
//! [`Clinician`] (a stored clinician as answered), and a membership with its clinic
//! ([`ClinicianClinic`]).

use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, doc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::clinics::Clinic;
use crate::api::error::ApiResult;
use crate::api::extract::user_id;
use crate::api::time;
use crate::api::validate::{bad, email, non_empty, one_of, unique};

/// The roles of `clinicianRoles.v1`.
pub const ROLES: [&str; 3] = ["CLINIC_ADMIN", "CLINIC_MEMBER", "PRESCRIBER"];
pub use crate::documents::{CLINIC_ADMIN as ADMIN, is_admin};

/// `clinician.v1` as a new clinician: a user (`id`) or an invite (`inviteId`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewClinician {
    /// The user id (absent for an invite).
    id: Option<String>,
    invite_id: Option<String>,
    email: Option<String>,
    name: Option<String>,
    roles: Option<Vec<String>>,
}

/// `inviteClinician.v1`: an admin invites an address to join with `roles`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct InviteClinician {
    email: Option<String>,
    roles: Option<Vec<String>>,
}

impl InviteClinician {
    /// The invite placeholder this asks for, under the new invite id `invite`.
    pub fn placeholder(self, invite: String) -> NewClinician {
        NewClinician {
            id: None,
            invite_id: Some(invite),
            email: self.email,
            name: None,
            roles: self.roles,
        }
    }
}

/// `associateClinicianToUser.v1`: the user who accepted an invite.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssociateClinician {
    user_id: String,
}

impl AssociateClinician {
    /// The user, validated.
    ///
    /// # Errors
    /// 400 naming `userId`.
    pub fn user(&self) -> ApiResult<String> {
        user_id("userId", &self.user_id)
    }
}

/// What an update of `clinician.v1` may change: the name and the roles (the address follows the
/// user's account, `UpdateClinicUserDetails`).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ClinicianUpdate {
    name: Option<String>,
    roles: Option<Vec<String>>,
}

/// A clinician as `clinician.v1` answers it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Clinician {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invite_id: Option<String>,
    email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    roles: Vec<String>,
    created_time: String,
    updated_time: String,
}

/// One membership of a user with its clinic (`clinicianClinicRelationships.v1` items).
#[derive(Debug, Serialize, ToSchema)]
pub struct ClinicianClinic {
    clinician: Clinician,
    clinic: Clinic,
}

impl ClinicianClinic {
    /// The membership `clinician` of `clinic`.
    pub fn new(clinician: &Document, clinic: &Document) -> Self {
        Self {
            clinician: clinician.into(),
            clinic: clinic.into(),
        }
    }
}

/// Roles as the contract wants them: at least one, known, no repeats.
fn roles(roles: &[String]) -> ApiResult<Vec<String>> {
    if roles.is_empty() {
        return Err(bad("roles", "at least one role is required"));
    }
    for (i, role) in roles.iter().enumerate() {
        one_of(&format!("roles[{i}]"), role, &ROLES)?;
    }
    unique("roles", roles)?;
    Ok(roles.to_vec())
}

/// The name sent, trimmed.
fn name(name: Option<&str>) -> ApiResult<Option<&str>> {
    name.map(|n| non_empty("name", n)).transpose()
}

impl NewClinician {
    /// A new clinician document of `clinic`: `email` and `roles` required, and a user `id` or
    /// an `inviteId`.
    ///
    /// # Errors
    /// 400 naming the field.
    pub fn new_document(&self, clinic: ObjectId, now: DateTime) -> ApiResult<Document> {
        let address = email(
            "email",
            self.email
                .as_deref()
                .ok_or_else(|| bad("email", "is required"))?,
        )?;
        let roles = roles(
            self.roles
                .as_deref()
                .ok_or_else(|| bad("roles", "is required"))?,
        )?;
        let mut clinician = doc! {
            "_id": ObjectId::new(), "clinicId": clinic, "email": address, "roles": roles,
            "createdTime": now, "updatedTime": now,
        };
        match (&self.id, &self.invite_id) {
            (Some(user), _) => clinician.insert("userId", user_id("id", user)?),
            (None, Some(invite)) => clinician.insert("inviteId", non_empty("inviteId", invite)?),
            _ => {
                return Err(bad(
                    "id",
                    "a user id, or an inviteId for an invite, is required",
                ));
            }
        };
        if let Some(name) = name(self.name.as_deref())? {
            clinician.insert("name", name);
        }
        Ok(clinician)
    }
}

impl ClinicianUpdate {
    /// The name sent, trimmed.
    ///
    /// # Errors
    /// 400 when it is empty.
    pub fn name(&self) -> ApiResult<Option<&str>> {
        self.name
            .as_deref()
            .map(|n| non_empty("name", n))
            .transpose()
    }

    /// The roles sent, validated.
    ///
    /// # Errors
    /// 400 naming the role.
    pub fn roles(&self) -> ApiResult<Option<Vec<String>>> {
        self.roles.as_deref().map(roles).transpose()
    }
}

impl From<&Document> for Clinician {
    fn from(clinician: &Document) -> Self {
        let text = |field: &str| crate::documents::text(clinician, field);
        Self {
            id: text("userId"),
            invite_id: text("inviteId"),
            email: text("email").unwrap_or_default(),
            name: text("name"),
            roles: clinician
                .get_array("roles")
                .map(|r| {
                    r.iter()
                        .filter_map(Bson::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            created_time: time::text(clinician.get_datetime("createdTime").ok()),
            updated_time: time::text(clinician.get_datetime("updatedTime").ok()),
        }
    }
}
