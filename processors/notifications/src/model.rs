//! What the processor keeps of its tables (projections of the documents with the fields the
//! emails need) and the record it hands the effect stage.

use std::collections::BTreeMap;

use bson::{Bson, Document, doc};
use clinic::documents::{is_custodial, user_id};
use clinic::streams::ProcessError;
use clinic::streams::projection::{Kept, part, text};
use clinic::streams::store::table_key;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// One email for the effect stage (`notifications.outbox`, JSON, keyed by `id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    /// Deterministic: the triggering record's identity, the template and the recipient.
    pub id: String,
    /// The template name.
    pub template: String,
    /// The recipient's address.
    pub to: String,
    /// The template's variables.
    pub variables: BTreeMap<String, String>,
}

/// The id of the email `template` to `recipient` caused by the record `source` (its change
/// event's resume token, or its topic, partition and offset): the same decision made again
/// after a rewind or a redelivery gets the same id. Hashed, so no address is in a key.
pub fn request_id(source: &str, template: &str, recipient: &str) -> String {
    let digest = Sha256::digest(format!("{source}\n{template}\n{recipient}"));
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{template}:{hex}")
}

/// A clinic: its name, its admins in order, and whether it suppressed invitation emails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clinic {
    /// `name` ("" when it has none).
    pub name: String,
    /// `admins` (user ids).
    pub admins: Vec<String>,
    /// `suppressedNotifications.patientClinicInvitation`.
    pub suppress_invitations: bool,
}

/// The strings of an array field (others skipped); absent is empty.
fn strings(document: &Document, field: &str) -> Result<Vec<String>, ProcessError> {
    match document.get(field) {
        None | Some(Bson::Null) => Ok(Vec::new()),
        Some(Bson::Array(items)) => Ok(items
            .iter()
            .filter_map(|item| item.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
            .collect()),
        Some(other) => Err(ProcessError::Poison(format!(
            "{field} should be an array, found a {:?}",
            other.element_type()
        ))),
    }
}

impl Kept for Clinic {
    fn of(document: &Document) -> Result<Option<Self>, ProcessError> {
        let suppress_invitations = document
            .get_document("suppressedNotifications")
            .ok()
            .and_then(|s| s.get_bool("patientClinicInvitation").ok())
            .unwrap_or(false);
        Ok(Some(Self {
            name: text(document, "name")?.unwrap_or_default(),
            admins: strings(document, "admins")?,
            suppress_invitations,
        }))
    }

    fn to_document(&self) -> Document {
        doc! {
            "name": &self.name, "admins": &self.admins,
            "suppressedNotifications": { "patientClinicInvitation": self.suppress_invitations },
        }
    }
}

/// The index key of a clinic's member or patient: clinic, then user.
pub fn member_index(clinic_id: &Bson, user: &str) -> String {
    member_key(&table_key(clinic_id), user)
}

/// The same from the clinic's document key.
pub fn member_key(clinic: &str, user: &str) -> String {
    format!("{clinic}|{}", part(user))
}

/// A document of `clinicId` and the text fields that are there.
fn present<const N: usize>(
    clinic_id: Option<&Bson>,
    fields: [(&str, &Option<String>); N],
) -> Document {
    let mut document = Document::new();
    if let Some(clinic) = clinic_id {
        document.insert("clinicId", clinic.clone());
    }
    for (field, value) in fields {
        if let Some(value) = value {
            document.insert(field, value);
        }
    }
    document
}

/// A clinician (or an invite, until a user accepts it), indexed by clinic and user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The clinic's id, typed as in the document.
    pub clinic_id: Option<Bson>,
    /// The user (none for an invite).
    pub user_id: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `email`.
    pub email: Option<String>,
}

impl Member {
    /// Its index key by clinic and user, for a member (an invite has no user).
    pub fn index(&self) -> Option<String> {
        Some(member_index(
            self.clinic_id.as_ref()?,
            self.user_id.as_deref()?,
        ))
    }
}

impl Kept for Member {
    fn of(document: &Document) -> Result<Option<Self>, ProcessError> {
        Ok(Some(Self {
            clinic_id: document.get("clinicId").cloned(),
            user_id: user_id(document),
            name: text(document, "name")?,
            email: text(document, "email")?,
        }))
    }

    fn to_document(&self) -> Document {
        present(
            self.clinic_id.as_ref(),
            [
                ("userId", &self.user_id),
                ("name", &self.name),
                ("email", &self.email),
            ],
        )
    }

    fn indexes(&self, _document_key: &str) -> Vec<String> {
        self.index().into_iter().collect()
    }
}

/// A patient of a clinic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Patient {
    /// The clinic's id, typed as in the document.
    pub clinic_id: Option<Bson>,
    /// The patient's user.
    pub user_id: Option<String>,
    /// `fullName`.
    pub name: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// Whether the clinic is the account's custodian (`permissions.custodian` present).
    pub custodial: bool,
    /// `lastUploadReminderTime` (ms since the Unix epoch) when set and after the epoch: a
    /// replace event that changes it is a reminder too. (Absent in projections kept before.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminded_at_ms: Option<i64>,
}

impl Kept for Patient {
    fn of(document: &Document) -> Result<Option<Self>, ProcessError> {
        let custodial = is_custodial(document);
        Ok(Some(Self {
            clinic_id: document.get("clinicId").cloned(),
            user_id: user_id(document),
            name: text(document, "fullName")?,
            email: text(document, "email")?,
            custodial,
            reminded_at_ms: match document.get("lastUploadReminderTime") {
                Some(Bson::DateTime(at)) if at.timestamp_millis() > 0 => {
                    Some(at.timestamp_millis())
                }
                _ => None,
            },
        }))
    }

    fn to_document(&self) -> Document {
        let mut document = present(
            self.clinic_id.as_ref(),
            [
                ("userId", &self.user_id),
                ("fullName", &self.name),
                ("email", &self.email),
            ],
        );
        if self.custodial {
            document.insert("permissions", doc! { "custodian": {} });
        }
        if let Some(at) = self.reminded_at_ms {
            document.insert("lastUploadReminderTime", bson::DateTime::from_millis(at));
        }
        document
    }
}
