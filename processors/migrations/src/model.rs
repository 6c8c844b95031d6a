//! What the processor keeps of its tables (each a projection of the documents with the fields it
//! reads, with the BSON types the documents have), the state of a migration, and the documents
//! and requests a migration writes.

use std::collections::{BTreeMap, BTreeSet};

use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, doc};
use clinic::documents::{permission_set, user_id};
use clinic::email::{self, EmailRequest};
use clinic::streams::ProcessError;
use clinic::streams::projection::{Kept, part, text};
use clinic::streams::store::table_key;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The permissions a legacy share may carry into a clinic (the reference worker's mapping);
/// `root` and anything else are dropped.
pub const MIGRATED_PERMISSIONS: [&str; 4] = ["custodian", "note", "upload", "view"];

fn poison(message: impl Into<String>) -> ProcessError {
    ProcessError::Poison(message.into())
}

/// A legacy share from `gatekeeper.perms`: `sharerId` lets `userId` (the grantee) see their
/// data with `permissions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Share {
    /// The row's `_id` (the tombstone's key).
    pub id: Bson,
    /// The data owner.
    pub sharer: String,
    /// The grantee (a legacy clinician, for the shares that matter here).
    pub grantee: String,
    /// Every permission key the row has.
    pub permissions: BTreeSet<String>,
}

impl Share {
    /// Its index key among the shares a migration would move, by grantee: never a user's own
    /// row, never one with no permission to carry over.
    pub fn by_grantee(&self, document_key: &str) -> Option<String> {
        (self.sharer != self.grantee && !self.migrated().is_empty())
            .then(|| format!("{}{document_key}", part(&self.grantee)))
    }

    /// The permissions a migration carries over.
    pub fn migrated(&self) -> BTreeSet<&str> {
        MIGRATED_PERMISSIONS
            .into_iter()
            .filter(|p| self.permissions.contains(*p))
            .collect()
    }
}

impl Kept for Share {
    fn of(document: &Document) -> Result<Option<Self>, ProcessError> {
        let (Some(sharer), Some(grantee)) =
            (text(document, "sharerId")?, text(document, "userId")?)
        else {
            return Err(poison("a perms row without sharerId or userId"));
        };
        let permissions = match document.get("permissions") {
            None | Some(Bson::Null) => BTreeSet::new(),
            Some(Bson::Document(map)) => map.keys().cloned().collect(),
            Some(other) => {
                return Err(poison(format!(
                    "permissions should be a document, found a {:?}",
                    other.element_type()
                )));
            }
        };
        let id = document
            .get("_id")
            .cloned()
            .ok_or_else(|| poison("a perms row without _id"))?;
        Ok(Some(Self {
            id,
            sharer,
            grantee,
            permissions,
        }))
    }

    fn to_document(&self) -> Document {
        let permissions = permission_set(self.permissions.iter().cloned());
        doc! { "_id": self.id.clone(), "sharerId": &self.sharer, "userId": &self.grantee, "permissions": permissions }
    }

    fn indexes(&self, document_key: &str) -> Vec<String> {
        self.by_grantee(document_key).into_iter().collect()
    }
}

/// A patient of a clinic, indexed by clinic and user, and by clinic and MRN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientRef {
    /// The clinic's id, typed as in the document.
    pub clinic_id: Bson,
    /// The patient's user.
    pub user_id: String,
    /// `mrn`. (Kept since the MRN rules; a patient kept before has none until its next change.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrn: Option<String>,
}

/// The index key of a clinic's patient.
pub fn patient_index(clinic_id: &Bson, user: &str) -> String {
    format!("{}|{}", table_key(clinic_id), part(user))
}

/// The index key of a clinic's patient with an MRN: `mrn|…`, which no clinic's table key (JSON
/// text) starts, so it never runs into [`patient_index`]'s keys.
pub fn mrn_index(clinic_id: &Bson, mrn: &str) -> String {
    format!("mrn|{}|{}", table_key(clinic_id), part(mrn))
}

impl Kept for PatientRef {
    fn of(document: &Document) -> Result<Option<Self>, ProcessError> {
        let (Some(user_id), Some(clinic_id)) = (user_id(document), document.get("clinicId")) else {
            return Ok(None);
        };
        Ok(Some(Self {
            clinic_id: clinic_id.clone(),
            user_id,
            mrn: text(document, "mrn")?,
        }))
    }

    fn to_document(&self) -> Document {
        let mut document = doc! { "clinicId": self.clinic_id.clone(), "userId": &self.user_id };
        if let Some(mrn) = &self.mrn {
            document.insert("mrn", mrn);
        }
        document
    }

    fn indexes(&self, _document_key: &str) -> Vec<String> {
        let mut keys = vec![patient_index(&self.clinic_id, &self.user_id)];
        keys.extend(self.mrn.as_deref().map(|m| mrn_index(&self.clinic_id, m)));
        keys
    }
}

/// A clinic: that it exists, its name and its MRN rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clinic {
    /// `name` ("" when it has none).
    pub name: String,
    /// `mrnSettings.unique`: no two patients of the clinic share an MRN.
    #[serde(default)]
    pub mrn_unique: bool,
    /// `mrnSettings.required`.
    #[serde(default)]
    pub mrn_required: bool,
}

impl Kept for Clinic {
    fn of(document: &Document) -> Result<Option<Self>, ProcessError> {
        let settings = document.get_document("mrnSettings").ok();
        let flag = |name: &str| settings.is_some_and(|s| s.get_bool(name) == Ok(true));
        Ok(Some(Self {
            name: text(document, "name")?.unwrap_or_default(),
            mrn_unique: flag("unique"),
            mrn_required: flag("required"),
        }))
    }

    fn to_document(&self) -> Document {
        doc! {
            "name": &self.name,
            "mrnSettings": { "unique": self.mrn_unique, "required": self.mrn_required },
        }
    }
}

/// What a migration takes from a user's profile. Tidepool's seagull keeps `{_id, userId,
/// value}` with `value` the profile as JSON text: `{"fullName", "email", "patient": {"fullName",
/// "birthday", "mrn", "emails": [...]}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The profile's user.
    pub user_id: String,
    /// The patient's name (`patient.fullName`, for an account kept for someone else), else the
    /// account's `fullName`.
    pub full_name: Option<String>,
    /// `patient.birthday` (`YYYY-MM-DD`).
    pub birth_date: Option<String>,
    /// `patient.mrn`.
    pub mrn: Option<String>,
    /// `email`, else the first of `patient.emails`.
    pub email: Option<String>,
}

fn json_text(value: &serde_json::Value, path: &[&str]) -> Option<String> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().to_owned())
}

impl Kept for Profile {
    fn of(document: &Document) -> Result<Option<Self>, ProcessError> {
        let Some(user_id) = user_id(document) else {
            return Err(poison("a profile without userId"));
        };
        let value = match document.get("value") {
            None | Some(Bson::Null) => serde_json::Value::Null,
            Some(Bson::String(text)) => serde_json::from_str(text)
                .map_err(|e| poison(format!("a profile's value is not JSON: {e}")))?,
            // A deployment that stores the profile as a document.
            Some(Bson::Document(value)) => Bson::Document(value.clone()).into_relaxed_extjson(),
            Some(other) => {
                return Err(poison(format!(
                    "a profile's value should be JSON text, found a {:?}",
                    other.element_type()
                )));
            }
        };
        let email = json_text(&value, &["email"]).or_else(|| {
            value
                .pointer("/patient/emails")?
                .as_array()?
                .iter()
                .filter_map(serde_json::Value::as_str)
                .find(|e| e.contains('@'))
                .map(str::to_owned)
        });
        Ok(Some(Self {
            user_id,
            full_name: json_text(&value, &["patient", "fullName"])
                .or_else(|| json_text(&value, &["fullName"])),
            birth_date: json_text(&value, &["patient", "birthday"]),
            mrn: json_text(&value, &["patient", "mrn"]),
            email,
        }))
    }

    fn to_document(&self) -> Document {
        let value = serde_json::json!({
            "fullName": self.full_name,
            "email": self.email,
            "patient": { "birthday": self.birth_date, "mrn": self.mrn },
        });
        doc! { "userId": &self.user_id, "value": value.to_string() }
    }

    fn indexes(&self, _document_key: &str) -> Vec<String> {
        vec![part(&self.user_id)]
    }
}

/// Where a migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Moving shares, a chunk per step.
    Running,
    /// Every share moved.
    Completed,
    /// Refused (its clinic does not exist, …); nothing was moved.
    Failed,
}

impl Status {
    /// As `clinic.migrations` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "RUNNING",
            Status::Completed => "COMPLETED",
            Status::Failed => "FAILED",
        }
    }
}

/// A migration the processor has taken on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    /// The migration document's `_id`.
    pub id: Bson,
    /// The clinic the patients move into.
    pub clinic_id: Bson,
    /// The legacy clinician.
    pub legacy: String,
    /// Where it stands.
    pub status: Status,
    /// The last share index key moved; the next step starts after it.
    pub cursor: Option<String>,
    /// Shares sent on to be moved so far.
    #[serde(default)]
    pub sent: u64,
    /// Every share has been sent (the cursor reached the end): complete when all are moved.
    #[serde(default)]
    pub listed: bool,
    /// Shares moved so far (the clinic's task said so).
    pub moved: u64,
    /// Patient documents written (moved shares whose user was not a patient of the clinic yet).
    pub created: u64,
    /// When it was triggered (epoch ms): the migrated patients' `createdTime`, the requests'
    /// `requestedTime`, so a replay writes identical records.
    pub at_ms: i64,
    /// The clinic's name when it started (`ClinicName`).
    pub clinic_name: String,
    /// The legacy clinician's name when it started (`LegacyClinicianName`).
    pub legacy_name: String,
}

/// A share on its way into the clinic, as the migration's stages hand it on: from the legacy
/// clinician's task to the patient's (which adds their profile and address), then to the
/// clinic's (which writes the patient).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Move {
    /// The migration's store key.
    pub key: String,
    /// The migration as it stood when the share was sent (its cursor left out).
    pub migration: Migration,
    /// The share.
    pub share: Share,
    /// The patient's profile (added by their task).
    #[serde(default)]
    pub profile: Option<Profile>,
    /// The patient's address (added by their task).
    #[serde(default)]
    pub address: Option<String>,
}

/// A share moved, told back to its migration (in the legacy clinician's task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moved {
    /// The migration's store key.
    pub key: String,
    /// A patient document was written (the user was not a patient of the clinic yet).
    pub created: bool,
}

/// A migration document's fields the trigger needs: `{_id, clinicId, userId, status}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// `_id`.
    pub id: Bson,
    /// `clinicId`.
    pub clinic_id: Bson,
    /// `userId`: the legacy clinician.
    pub legacy: String,
    /// `status`.
    pub status: String,
    /// `createdTime`, epoch ms, when it has one.
    pub created_ms: Option<i64>,
}

impl Trigger {
    /// Reads a migration document.
    ///
    /// # Errors
    /// Poison when `_id`, `clinicId`, `userId` or `status` is missing.
    pub fn of(document: &Document) -> Result<Self, ProcessError> {
        let id = document
            .get("_id")
            .cloned()
            .ok_or_else(|| poison("a migration without _id"))?;
        let clinic_id = match document.get("clinicId") {
            Some(id @ (Bson::ObjectId(_) | Bson::String(_))) => id.clone(),
            _ => return Err(poison("a migration without clinicId")),
        };
        let legacy = user_id(document).ok_or_else(|| poison("a migration without userId"))?;
        let status =
            text(document, "status")?.ok_or_else(|| poison("a migration without status"))?;
        Ok(Self {
            id,
            clinic_id,
            legacy,
            status,
            created_ms: document
                .get_datetime("createdTime")
                .ok()
                .map(|t| t.timestamp_millis()),
        })
    }
}

/// The status row for `sink.clinic.migrations` (`$set` by the sink: other fields stay).
pub fn status_row(status: Status, at_ms: i64, reason: Option<&str>) -> Document {
    let mut row = doc! { "status": status.as_str(), "updatedTime": DateTime::from_millis(at_ms) };
    if let Some(reason) = reason {
        row.insert("failureReason", reason);
    }
    row
}

/// The `_id` of a migrated patient: the clinic id's 4 time bytes and 8 bytes of a SHA-256 of
/// (clinic, user). Deterministic, so a replay (or a second migration into the same clinic
/// before the first one's patients are seen) writes the same document instead of a second one
/// for the same clinic and user.
pub fn patient_id(clinic_id: &Bson, user: &str) -> ObjectId {
    let mut bytes = [0_u8; 12];
    if let Bson::ObjectId(clinic) = clinic_id {
        bytes[..4].copy_from_slice(&clinic.bytes()[..4]);
    }
    let digest = Sha256::digest(format!("{}|{user}", table_key(clinic_id)));
    bytes[4..].copy_from_slice(&digest[..8]);
    ObjectId::from_bytes(bytes)
}

/// A migrated patient's document, as the API writes patients (the reference service's
/// CreatePatientFromUser with `isMigrated` and the legacy clinician): profile fields are empty
/// strings where unknown.
pub fn patient_document(
    migration: &Migration,
    share: &Share,
    profile: Option<&Profile>,
    email: Option<&str>,
) -> Document {
    let permissions = permission_set(share.migrated());
    let field = |get: fn(&Profile) -> &Option<String>| {
        profile.and_then(|p| get(p).clone()).unwrap_or_default()
    };
    let at = DateTime::from_millis(migration.at_ms);
    doc! {
        "_id": patient_id(&migration.clinic_id, &share.sharer),
        "clinicId": migration.clinic_id.clone(),
        "userId": &share.sharer,
        "fullName": field(|p| &p.full_name),
        "birthDate": field(|p| &p.birth_date),
        "email": email.unwrap_or_default(),
        "mrn": field(|p| &p.mrn),
        "permissions": permissions,
        "isMigrated": true,
        "legacyClinicianIds": [&migration.legacy],
        "createdTime": at,
        "updatedTime": at,
    }
}

/// The id of a migration's email request: the migration, the template and the recipient.
pub fn request_id(migration: &Migration, template: &str, recipient: &str) -> String {
    format!(
        "migration:{}:{template}:{recipient}",
        table_key(&migration.id)
    )
}

/// The `migrate_patient` email to a moved patient.
pub fn migrate_patient(migration: &Migration, user: &str, address: &str) -> EmailRequest {
    EmailRequest {
        id: request_id(migration, email::MIGRATE_PATIENT, user),
        template: email::MIGRATE_PATIENT.into(),
        recipient_email: Some(address.to_owned()),
        recipient_user_id: Some(user.to_owned()),
        variables: BTreeMap::from([
            ("ClinicName".into(), migration.clinic_name.clone()),
            ("LegacyClinicianName".into(), migration.legacy_name.clone()),
        ]),
        requested_ms: migration.at_ms,
    }
}

/// The `clinic_migration_complete` email to the legacy clinician (the address when known; the
/// notifications processor looks the user up otherwise).
pub fn migration_complete(migration: &Migration, address: Option<&str>) -> EmailRequest {
    EmailRequest {
        id: request_id(
            migration,
            email::CLINIC_MIGRATION_COMPLETE,
            &migration.legacy,
        ),
        template: email::CLINIC_MIGRATION_COMPLETE.into(),
        recipient_email: address.map(str::to_owned),
        recipient_user_id: Some(migration.legacy.clone()),
        variables: BTreeMap::from([("ClinicName".into(), migration.clinic_name.clone())]),
        requested_ms: migration.at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_reads_the_patients_name_birthday_mrn_and_an_address() {
        let document = doc! { "_id": 1, "userId": "u1", "value": r#"{"fullName":"Parent","patient":{"fullName":"Child","birthday":"2012-03-04","mrn":"M1","emails":["c@x.org"]}}"# };
        let profile = Profile::of(&document).expect("reads").expect("kept");
        assert_eq!(profile.full_name.as_deref(), Some("Child"));
        assert_eq!(profile.birth_date.as_deref(), Some("2012-03-04"));
        assert_eq!(profile.mrn.as_deref(), Some("M1"));
        assert_eq!(profile.email.as_deref(), Some("c@x.org"));
        // What an update without fullDocument is applied to reads back the same.
        assert_eq!(Profile::of(&profile.to_document()), Ok(Some(profile)));
        let bad = doc! { "userId": "u1", "value": "{not json" };
        assert!(matches!(Profile::of(&bad), Err(ProcessError::Poison(_))));
    }

    #[test]
    fn own_rows_and_rows_without_a_migratable_permission_are_not_indexed() {
        let share = |sharer: &str, permissions: Document| {
            Share::of(&doc! { "_id": 1, "sharerId": sharer, "userId": "legacy", "permissions": permissions })
                .expect("reads")
                .expect("kept")
        };
        assert!(
            share("legacy", doc! { "root": {} })
                .by_grantee("k")
                .is_none()
        );
        assert!(share("p1", doc! { "root": {} }).by_grantee("k").is_none());
        let kept = share("p1", doc! { "view": {}, "root": {}, "upload": {} });
        assert_eq!(kept.by_grantee("k").as_deref(), Some("\"legacy\"|k"));
        assert_eq!(kept.migrated(), BTreeSet::from(["upload", "view"]));
    }

    #[test]
    fn a_migrated_patients_id_depends_on_clinic_and_user_only() {
        let clinic = Bson::ObjectId(ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").expect("hex"));
        let id = patient_id(&clinic, "u1");
        assert_eq!(id, patient_id(&clinic, "u1"));
        assert_ne!(id, patient_id(&clinic, "u2"));
        assert_eq!(id.bytes()[..4], [0x65, 0xa1, 0xb2, 0xc3]);
    }
}
