//! `patient.v1` both ways: [`PatientInput`] (a patient's writable fields), [`NewPatient`]
//! (`createPatient.v1`, a user added with the permissions they share), [`Permissions`]
//! (`patientPermissions.v1`), and what is answered: [`Patient`], a page of them
//! ([`PatientPage`]) and a patient record with its clinic ([`PatientClinic`]).

use bson::oid::ObjectId;
use bson::{Bson, Document};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::clinics::Clinic;
use crate::api::error::ApiResult;
use crate::api::extract::object_id;
use crate::api::time;
use crate::api::validate::{bad, date, email, non_empty, one_of, unique};

/// Permission names of `patientPermissions.v1`.
pub const PERMISSIONS: [&str; 4] = ["custodian", "view", "upload", "note"];
const DIAGNOSIS_TYPES: [&str; 10] = [
    "type1",
    "type2",
    "type3c",
    "gestational",
    "prediabetes",
    "lada",
    "mody",
    "other",
    "notApplicable",
    "",
];
const PROVIDERS: [&str; 3] = ["twiist", "dexcom", "abbott"];

/// The writable fields of `patient.v1`. A JSON `null` is taken as "not sent" (PUT never nulls a
/// field); an empty string clears `diagnosisType`, as the reference.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatientInput {
    email: Option<String>,
    full_name: Option<String>,
    birth_date: Option<String>,
    mrn: Option<String>,
    tags: Option<Vec<String>>,
    target_devices: Option<Vec<String>>,
    diagnosis_type: Option<String>,
}

/// `createPatient.v1`: an existing user added to a clinic with the permissions they share.
/// `fullName` and `birthDate` are required here (there is no profile service to read them from).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewPatient {
    full_name: Option<String>,
    birth_date: Option<String>,
    mrn: Option<String>,
    tags: Option<Vec<String>>,
    diagnosis_type: Option<String>,
    /// The grants the user shares with the clinic (at least one).
    pub permissions: Option<Permissions>,
    /// Set by the migration of a legacy clinician's patients.
    pub is_migrated: Option<bool>,
    /// The legacy clinician whose patient this was.
    pub legacy_clinician_id: Option<String>,
}

/// `AcceptPatientInvitation`: what the clinic adds to (or corrects in) the invited patient's
/// profile when it accepts. The same fields as [`NewPatient`]'s profile, spelled out again:
/// `#[serde(flatten)]` would lose the field paths of type errors.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptedInvitation {
    full_name: Option<String>,
    birth_date: Option<String>,
    mrn: Option<String>,
    tags: Option<Vec<String>>,
    diagnosis_type: Option<String>,
}

/// `patientPermissions.v1`: each present key is a grant (its value an empty object).
#[derive(Debug, Default, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    #[serde(skip_serializing_if = "Option::is_none")]
    custodian: Option<Grant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    view: Option<Grant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload: Option<Grant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<Grant>,
}

/// One grant: an object whose content carries no meaning (`{}` on the way out).
#[derive(Debug, Default, Clone, Deserialize, Serialize, ToSchema)]
pub struct Grant {}

/// A patient as `patient.v1` answers it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Patient {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    full_name: String,
    birth_date: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mrn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_devices: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permissions: Option<Permissions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    diagnosis_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_upload_reminder_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reviews: Option<Vec<Review>>,
    connection_requests: ConnectionRequests,
    created_time: String,
    updated_time: String,
}

/// `patientReview.v1`: who reviewed the patient's data, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    clinician_id: String,
    time: String,
}

impl Review {
    /// The stored `reviews` of a patient, newest first.
    pub fn all_of(patient: &Document) -> Vec<Self> {
        patient
            .get_array("reviews")
            .map(|reviews| {
                reviews
                    .iter()
                    .filter_map(Bson::as_document)
                    .map(|r| Self {
                        clinician_id: r.get_str("clinicianId").unwrap_or_default().to_owned(),
                        time: time::text(r.get_datetime("time").ok()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The data-provider connections requested of the patient, per provider.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionRequests {
    twiist: Vec<ConnectionRequest>,
    dexcom: Vec<ConnectionRequest>,
    abbott: Vec<ConnectionRequest>,
}

/// One connection request.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRequest {
    provider_name: String,
    created_time: String,
}

/// A page of a clinic's patients (`patientsResponse.v1`).
#[derive(Debug, Serialize, ToSchema)]
pub struct PatientPage {
    /// The page.
    pub data: Vec<Patient>,
    /// The counts.
    pub meta: PageMeta,
}

/// How many patients match the query, and how many the clinic has.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageMeta {
    /// Patients matching the query.
    pub count: u64,
    /// Patients of the clinic.
    pub total_count: u64,
}

/// A patient record with its clinic (`patientClinicRelationships.v1` items).
#[derive(Debug, Serialize, ToSchema)]
pub struct PatientClinic {
    patient: Patient,
    clinic: Clinic,
}

impl PatientClinic {
    /// The record `patient` of `clinic`.
    pub fn new(patient: &Document, clinic: &Document) -> Self {
        Self {
            patient: patient.into(),
            clinic: clinic.into(),
        }
    }
}

impl Permissions {
    /// The granted names, in the contract's order.
    pub fn granted(&self) -> Vec<&'static str> {
        [
            ("custodian", &self.custodian),
            ("view", &self.view),
            ("upload", &self.upload),
            ("note", &self.note),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k)
        .collect()
    }

    /// The grants named (unknown names are not grants).
    pub fn of<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut out = Self::default();
        for name in names {
            let slot = match name {
                "custodian" => &mut out.custodian,
                "view" => &mut out.view,
                "upload" => &mut out.upload,
                "note" => &mut out.note,
                _ => continue,
            };
            *slot = Some(Grant {});
        }
        out
    }
}

/// Grants as stored: `{view: {}, …}`.
pub fn grants_document(grants: &[&str]) -> Document {
    crate::documents::permission_set(grants.iter().copied())
}

/// The profile fields of either request, borrowed for one validation.
#[derive(Default)]
struct Profile<'a> {
    full_name: Option<&'a str>,
    birth_date: Option<&'a str>,
    email: Option<&'a str>,
    mrn: Option<&'a str>,
    tags: Option<&'a [String]>,
    target_devices: Option<&'a [String]>,
    diagnosis_type: Option<&'a str>,
}

impl Profile<'_> {
    /// Validated fields to `$set` (only those sent); `tags` must be the clinic's.
    fn to_set(&self, clinic: &Document) -> ApiResult<Document> {
        let mut set = Document::new();
        if let Some(name) = self.full_name {
            set.insert("fullName", non_empty("fullName", name)?);
        }
        if let Some(day) = self.birth_date {
            set.insert("birthDate", date("birthDate", day)?);
        }
        if let Some(address) = self.email {
            set.insert("email", email("email", address)?);
        }
        if let Some(mrn) = self.mrn {
            set.insert("mrn", non_empty("mrn", mrn)?);
        }
        if let Some(devices) = self.target_devices {
            for (i, device) in devices.iter().enumerate() {
                non_empty(&format!("targetDevices[{i}]"), device)?;
            }
            set.insert("targetDevices", devices);
        }
        if let Some(kind) = self.diagnosis_type {
            set.insert(
                "diagnosisType",
                one_of("diagnosisType", kind, &DIAGNOSIS_TYPES)?,
            );
        }
        if let Some(tags) = self.tags {
            let known: Vec<ObjectId> = clinic
                .get_array("patientTags")
                .map(|t| {
                    t.iter()
                        .filter_map(|t| t.as_document()?.get_object_id("_id").ok())
                        .collect()
                })
                .unwrap_or_default();
            let mut ids = Vec::with_capacity(tags.len());
            for (i, tag) in tags.iter().enumerate() {
                let id = object_id(&format!("tags[{i}]"), tag)?;
                if !known.contains(&id) {
                    return Err(bad(&format!("tags[{i}]"), "is not a tag of this clinic"));
                }
                ids.push(id);
            }
            unique("tags", &ids)?;
            set.insert("tags", ids);
        }
        Ok(set)
    }
}

/// Refuses a new patient document without the fields `patient.v1` requires.
fn complete(patient: Document) -> ApiResult<Document> {
    for required in ["fullName", "birthDate"] {
        if !patient.contains_key(required) {
            return Err(bad(required, "is required"));
        }
    }
    Ok(patient)
}

impl PatientInput {
    /// Validated fields to `$set` (only those sent); `tags` must be the clinic's.
    ///
    /// # Errors
    /// 400 naming the field.
    pub fn to_set(&self, clinic: &Document) -> ApiResult<Document> {
        Profile {
            full_name: self.full_name.as_deref(),
            birth_date: self.birth_date.as_deref(),
            email: self.email.as_deref(),
            mrn: self.mrn.as_deref(),
            tags: self.tags.as_deref(),
            target_devices: self.target_devices.as_deref(),
            diagnosis_type: self.diagnosis_type.as_deref(),
        }
        .to_set(clinic)
    }

    /// The profile of a new patient: as [`Self::to_set`], with `fullName` and `birthDate`.
    ///
    /// # Errors
    /// 400 naming the field.
    pub fn new_profile(&self, clinic: &Document) -> ApiResult<Document> {
        complete(self.to_set(clinic)?)
    }
}

impl NewPatient {
    /// The validated profile, with `fullName` and `birthDate`.
    ///
    /// # Errors
    /// 400 naming the field.
    pub fn new_profile(&self, clinic: &Document) -> ApiResult<Document> {
        complete(
            Profile {
                full_name: self.full_name.as_deref(),
                birth_date: self.birth_date.as_deref(),
                mrn: self.mrn.as_deref(),
                tags: self.tags.as_deref(),
                diagnosis_type: self.diagnosis_type.as_deref(),
                ..Profile::default()
            }
            .to_set(clinic)?,
        )
    }
}

impl AcceptedInvitation {
    /// Validated fields to `$set` over the invited profile (only those sent).
    ///
    /// # Errors
    /// 400 naming the field.
    pub fn to_set(&self, clinic: &Document) -> ApiResult<Document> {
        Profile {
            full_name: self.full_name.as_deref(),
            birth_date: self.birth_date.as_deref(),
            mrn: self.mrn.as_deref(),
            tags: self.tags.as_deref(),
            diagnosis_type: self.diagnosis_type.as_deref(),
            ..Profile::default()
        }
        .to_set(clinic)
    }
}

/// The profile of an invitation (name and birth date), validated.
///
/// # Errors
/// 400 naming the field.
pub fn invited_profile(full_name: &str, birth_date: &str) -> ApiResult<Document> {
    Profile {
        full_name: Some(full_name),
        birth_date: Some(birth_date),
        ..Profile::default()
    }
    .to_set(&Document::new())
}

impl From<&Document> for Patient {
    fn from(patient: &Document) -> Self {
        let text = |field: &str| crate::documents::text(patient, field);
        let requests = patient.get_document("providerConnectionRequests").ok();
        let requested = |provider: &str| -> Vec<ConnectionRequest> {
            requests
                .and_then(|r| r.get_array(provider).ok())
                .map(|items| {
                    items
                        .iter()
                        .filter_map(Bson::as_document)
                        .map(|r| ConnectionRequest {
                            provider_name: r.get_str("providerName").unwrap_or(provider).to_owned(),
                            created_time: time::text(r.get_datetime("createdTime").ok()),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let [twiist, dexcom, abbott] = PROVIDERS;
        Self {
            id: text("userId").unwrap_or_default(),
            email: text("email"),
            full_name: text("fullName").unwrap_or_default(),
            birth_date: text("birthDate").unwrap_or_default(),
            mrn: text("mrn"),
            tags: patient.get_array("tags").ok().map(|tags| {
                tags.iter()
                    .filter_map(|t| t.as_object_id().map(|o| o.to_hex()))
                    .collect()
            }),
            target_devices: patient.get_array("targetDevices").ok().map(|devices| {
                devices
                    .iter()
                    .filter_map(Bson::as_str)
                    .map(str::to_owned)
                    .collect()
            }),
            permissions: patient
                .get_document("permissions")
                .ok()
                .map(|grants| Permissions::of(grants.keys().map(String::as_str))),
            diagnosis_type: text("diagnosisType"),
            last_upload_reminder_time: patient
                .get_datetime("lastUploadReminderTime")
                .ok()
                .map(|at| time::text(Some(at))),
            reviews: patient
                .get_array("reviews")
                .is_ok()
                .then(|| Review::all_of(patient)),
            connection_requests: ConnectionRequests {
                twiist: requested(twiist),
                dexcom: requested(dexcom),
                abbott: requested(abbott),
            },
            created_time: time::text(patient.get_datetime("createdTime").ok()),
            updated_time: time::text(patient.get_datetime("updatedTime").ok()),
        }
    }
}
