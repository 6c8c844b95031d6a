//! Gatekeeper's rows for the clinic's patients and clinicians: what a patient or clinician
//! document grants, exactly the fields gatekeeper reads, with the BSON types the clinic documents
//! have (`clinicId` stays an ObjectId: gatekeeper's `$lookup` joins the two collections on it,
//! also with rows Tidepool's own sinks wrote). The permissions processor emits them as documents
//! change; `clinic reconcile permissions` computes them from the collections to check gatekeeper
//! against, through the same code.

use std::collections::BTreeSet;

use crate::documents::{permission_set, user_id};
use crate::streams::ProcessError;
use crate::streams::projection::Kept;
use bson::{Bson, Document, doc};
use serde::{Deserialize, Serialize};

/// A patient's grants to a clinic (`sink.gatekeeper.patient_permissions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientGrant {
    /// The patient's user id.
    pub user_id: String,
    /// The clinic's id, typed as in the patient document (an ObjectId).
    pub clinic_id: Bson,
    /// Granted permission names (`custodian`, `view`, `upload`, `note`).
    pub permissions: BTreeSet<String>,
}

/// A clinician's membership of a clinic (`sink.gatekeeper.clinician_permissions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    /// The clinician's user id.
    pub user_id: String,
    /// The clinic's id, typed as in the clinician document (an ObjectId).
    pub clinic_id: Bson,
    /// Roles (`CLINIC_ADMIN`, `CLINIC_MEMBER`, …), in document order.
    pub roles: Vec<String>,
}

/// An id as the document has it: an ObjectId, or a non-empty string.
fn id(value: &Bson, field: &str) -> Result<Bson, ProcessError> {
    match value {
        Bson::ObjectId(_) => Ok(value.clone()),
        Bson::String(s) if !s.is_empty() => Ok(value.clone()),
        // The error names the type only: messages reach logs, and values are personal data.
        other => Err(ProcessError::Poison(format!(
            "{field} should be an id, found a {:?}",
            other.element_type()
        ))),
    }
}

fn clinic_id(document: &Document) -> Result<Bson, ProcessError> {
    let clinic = document
        .get("clinicId")
        .ok_or_else(|| ProcessError::Poison("no clinicId".into()))?;
    id(clinic, "clinicId")
}

impl Kept for PatientGrant {
    /// The grant a patient document makes; `None` when it grants nothing (no user, or no
    /// permission left).
    ///
    /// # Errors
    /// Poison when the document's `clinicId` or `permissions` has the wrong shape.
    fn of(document: &Document) -> Result<Option<Self>, ProcessError> {
        let Some(user_id) = user_id(document) else {
            return Ok(None);
        };
        let permissions: BTreeSet<String> = match document.get("permissions") {
            None | Some(Bson::Null) => BTreeSet::new(),
            Some(Bson::Document(map)) => map.keys().cloned().collect(),
            Some(other) => {
                return Err(ProcessError::Poison(format!(
                    "permissions should be a document, found a {:?}",
                    other.element_type()
                )));
            }
        };
        if permissions.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            user_id,
            clinic_id: clinic_id(document)?,
            permissions,
        }))
    }

    /// The document fields it came from: what the gatekeeper row holds besides `_id`, and what
    /// an update without `fullDocument` is applied to.
    fn to_document(&self) -> Document {
        let permissions = permission_set(self.permissions.iter().cloned());
        doc! { "userId": &self.user_id, "clinicId": self.clinic_id.clone(), "permissions": permissions }
    }
}

impl Kept for Membership {
    /// The membership a clinician document makes; `None` for an invite with no user yet.
    ///
    /// # Errors
    /// Poison when `clinicId` or `roles` has the wrong shape.
    fn of(document: &Document) -> Result<Option<Self>, ProcessError> {
        let Some(user_id) = user_id(document) else {
            return Ok(None);
        };
        let roles = match document.get("roles") {
            None | Some(Bson::Null) => Vec::new(),
            Some(Bson::Array(items)) => items
                .iter()
                .map(|r| {
                    r.as_str().map(str::to_owned).ok_or_else(|| {
                        ProcessError::Poison(format!(
                            "roles should hold strings, found a {:?}",
                            r.element_type()
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(ProcessError::Poison(format!(
                    "roles should be an array, found a {:?}",
                    other.element_type()
                )));
            }
        };
        Ok(Some(Self {
            user_id,
            clinic_id: clinic_id(document)?,
            roles,
        }))
    }

    /// The gatekeeper row besides `_id`; also what updates without `fullDocument` apply to.
    fn to_document(&self) -> Document {
        doc! { "userId": &self.user_id, "clinicId": self.clinic_id.clone(), "roles": &self.roles }
    }
}

/// Gatekeeper's database.
pub const DATABASE: &str = "gatekeeper";
/// The collection of [`PatientGrant`] rows.
pub const PATIENT_PERMISSIONS: &str = "patient_permissions";
/// The collection of [`Membership`] rows.
pub const CLINICIAN_PERMISSIONS: &str = "clinician_permissions";

/// The gatekeeper row a document's projection makes: its `_id`, then the projection's fields.
pub fn row<K: Kept>(id: &Bson, projection: &K) -> Document {
    let mut row = doc! { "_id": id.clone() };
    row.extend(projection.to_document());
    row
}
