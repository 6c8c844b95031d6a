//! Patients of a clinic: list (members; search, tags, sort, paging; `{data, meta}`), create a
//! custodial patient (members), create from an existing user (services), get and update
//! (members; PUT never nulls omitted fields), delete (admins or the patient; archived first),
//! the patient's own permissions (replace, or drop one; a patient cannot grant `custodian`; no
//! permission left removes the record), the clinics of a patient, and the upload reminder.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, doc};
use futures::TryStreamExt as _;
use mongodb::options::FindOptions;
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::{Need, require};
use super::auth::Caller;
use super::clinicians::{email, regex_escape};
use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, Params, object_id, user_id};
use super::store::Archived;
use super::{AppState, clinics, time};

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
/// Sortable fields (`sort=+fullName`, `-birthDate`, …).
const SORTABLE: [&str; 5] = ["fullName", "birthDate", "email", "mrn", "createdTime"];

fn bad(field: &str, why: &str) -> ApiError {
    ApiError::BadRequest(format!("{field}: {why}"))
}

/// The writable fields of `patient.v1` and `createPatient.v1`. A JSON `null` is taken as "not
/// sent" (PUT never nulls a field); an empty string clears `diagnosisType`, as the reference.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatientInput {
    email: Option<String>,
    full_name: Option<String>,
    birth_date: Option<String>,
    mrn: Option<String>,
    tags: Option<Vec<String>>,
    target_devices: Option<Vec<String>>,
    diagnosis_type: Option<String>,
    permissions: Option<Permissions>,
    is_migrated: Option<bool>,
    legacy_clinician_id: Option<String>,
}

/// `patientPermissions.v1`: each present key is a grant (its value an empty object).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    custodian: Option<serde_json::Map<String, Value>>,
    view: Option<serde_json::Map<String, Value>>,
    upload: Option<serde_json::Map<String, Value>>,
    note: Option<serde_json::Map<String, Value>>,
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
}

/// Grants as stored: `{view: {}, …}`.
pub fn grants_document(grants: &[&str]) -> Document {
    grants
        .iter()
        .map(|g| ((*g).to_owned(), Bson::Document(Document::new())))
        .collect()
}

fn valid_date(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let [y, m, d] = parts[..] else { return false };
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<u32>(), m.parse::<u32>(), d.parse::<u32>()) else {
        return false;
    };
    if !(1900..=2200).contains(&y) || !(1..=12).contains(&m) || text.len() != 10 {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    (1..=days[(m - 1) as usize]).contains(&d)
}

impl PatientInput {
    /// The profile fields of an invitation (name and birth date).
    pub fn named(full_name: String, birth_date: String) -> Self {
        Self {
            full_name: Some(full_name),
            birth_date: Some(birth_date),
            ..Self::default()
        }
    }

    /// Validated profile fields to `$set` (only those sent); `tags` must be the clinic's.
    pub fn profile(&self, clinic: &Document) -> ApiResult<Document> {
        let mut set = Document::new();
        if let Some(name) = &self.full_name {
            if name.trim().is_empty() {
                return Err(bad("fullName", "must not be empty"));
            }
            set.insert("fullName", name.trim());
        }
        if let Some(date) = &self.birth_date {
            if !valid_date(date) {
                return Err(bad("birthDate", "must be a date, YYYY-MM-DD"));
            }
            set.insert("birthDate", date);
        }
        if let Some(address) = &self.email {
            set.insert("email", email("email", address)?);
        }
        if let Some(mrn) = &self.mrn {
            if mrn.trim().is_empty() {
                return Err(bad("mrn", "must not be empty"));
            }
            set.insert("mrn", mrn.trim());
        }
        if let Some(devices) = &self.target_devices {
            if devices.iter().any(|d| d.trim().is_empty()) {
                return Err(bad("targetDevices", "items must not be empty"));
            }
            set.insert("targetDevices", devices);
        }
        if let Some(kind) = &self.diagnosis_type {
            if !DIAGNOSIS_TYPES.contains(&kind.as_str()) {
                return Err(bad(
                    "diagnosisType",
                    &format!("must be one of {DIAGNOSIS_TYPES:?}"),
                ));
            }
            set.insert("diagnosisType", kind);
        }
        if let Some(tags) = &self.tags {
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
                if ids.contains(&id) {
                    return Err(bad("tags", "items must be unique"));
                }
                ids.push(id);
            }
            set.insert("tags", ids);
        }
        Ok(set)
    }
}

/// A stored patient as `patient.v1`.
pub fn to_json(patient: &Document) -> Value {
    let mut out = json!({
        "id": patient.get_str("userId").unwrap_or_default(),
        "fullName": patient.get_str("fullName").unwrap_or_default(),
        "birthDate": patient.get_str("birthDate").unwrap_or_default(),
        "createdTime": time::text(patient.get_datetime("createdTime").ok()),
        "updatedTime": time::text(patient.get_datetime("updatedTime").ok()),
    });
    for field in ["email", "mrn", "diagnosisType"] {
        if let Ok(value) = patient.get_str(field) {
            out[field] = json!(value);
        }
    }
    if let Ok(devices) = patient.get_array("targetDevices") {
        out["targetDevices"] = json!(devices.iter().filter_map(Bson::as_str).collect::<Vec<_>>());
    }
    if let Ok(tags) = patient.get_array("tags") {
        out["tags"] = json!(
            tags.iter()
                .filter_map(|t| t.as_object_id().map(|o| o.to_hex()))
                .collect::<Vec<_>>()
        );
    }
    if let Ok(grants) = patient.get_document("permissions") {
        let grants: serde_json::Map<String, Value> =
            grants.keys().map(|k| (k.clone(), json!({}))).collect();
        out["permissions"] = Value::Object(grants);
    }
    if let Ok(at) = patient.get_datetime("lastUploadReminderTime") {
        out["lastUploadReminderTime"] = json!(time::text(Some(at)));
    }
    let requests = patient.get_document("providerConnectionRequests").ok();
    let mut connection = serde_json::Map::new();
    for provider in PROVIDERS {
        let items: Vec<Value> = requests
            .and_then(|r| r.get_array(provider).ok())
            .map(|items| {
                items
                    .iter()
                    .filter_map(Bson::as_document)
                    .map(|r| {
                        json!({
                            "providerName": r.get_str("providerName").unwrap_or(provider),
                            "createdTime": time::text(r.get_datetime("createdTime").ok()),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        connection.insert(provider.into(), Value::Array(items));
    }
    out["connectionRequests"] = Value::Object(connection);
    out
}

async fn find(state: &AppState, clinic: ObjectId, user: &str) -> ApiResult<Document> {
    state
        .store
        .patients
        .find_one(doc! { "clinicId": clinic, "userId": user })
        .await?
        .ok_or_else(|| gone(clinic, user))
}

/// 404 for a patient that is not there (or that a racing request removed first).
fn gone(clinic: ObjectId, user: &str) -> ApiError {
    ApiError::NotFound(format!(
        "patient {user} not found in clinic {}",
        clinic.to_hex()
    ))
}

fn conflict(error: mongodb::error::Error) -> ApiError {
    match ApiError::from(error) {
        ApiError::Conflict(_) => ApiError::Conflict("the clinic already has this patient".into()),
        other => other,
    }
}

/// `GET /v1/clinics/{clinicId}/patients`: members and services. `search` (a literal,
/// case-insensitive substring of name, email, MRN or birth date), `tags` (comma-separated ids;
/// patients with all of them), `sort` (`+`/`-` and one of fullName, birthDate, email, mrn,
/// createdTime; default `+fullName`), `offset`, `limit`.
#[utoipa::path(
    get,
    path = "/v1/clinics/{clinicId}/patients",
    operation_id = "ListPatients",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("search" = String, Query), ("tags" = String, Query), ("sort" = String, Query), ("offset" = u64, Query), ("limit" = i64, Query)),
    responses((status = 200, description = "patientsResponse.v1", body = serde_json::Value), (status = 400, description = "error.v1", body = serde_json::Value), (status = 401, description = "error.v1", body = serde_json::Value), (status = 403, description = "error.v1", body = serde_json::Value), (status = 404, description = "error.v1", body = serde_json::Value)),
    security(("sessionToken" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic_id): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    clinics::find(&state, clinic_id).await?;
    require(&state.store, &caller, clinic_id, Need::Read).await?;
    let (offset, limit) = params.page()?;
    let mut filter = doc! { "clinicId": clinic_id };
    if let Some(search) = params.text("search").filter(|s| !s.trim().is_empty()) {
        let pattern = regex_escape(search.trim());
        let any: Vec<Document> = ["fullName", "email", "mrn", "birthDate"]
            .iter()
            .map(|f| doc! { *f: { "$regex": &pattern, "$options": "i" } })
            .collect();
        filter.insert("$or", any);
    }
    if let Some(tags) = params.text("tags").filter(|t| !t.is_empty()) {
        let ids = tags
            .split(',')
            .map(|t| object_id("query parameter tags", t.trim()))
            .collect::<ApiResult<Vec<_>>>()?;
        filter.insert("tags", doc! { "$all": ids });
    }
    let (field, direction) = match params.text("sort") {
        None => ("fullName", 1),
        Some(sort) => {
            let (direction, field) = match sort.split_at_checked(1) {
                Some(("+", field)) => (1, field),
                Some(("-", field)) => (-1, field),
                _ => return Err(bad("query parameter sort", "must be +field or -field")),
            };
            let field = SORTABLE.iter().find(|f| **f == field).ok_or_else(|| {
                bad(
                    "query parameter sort",
                    &format!("sortable fields are {SORTABLE:?}"),
                )
            })?;
            (*field, direction)
        }
    };
    let options = FindOptions::builder()
        .sort(doc! { field: direction, "_id": 1 })
        .skip(offset)
        .limit(limit)
        .build();
    let patients: Vec<Document> = state
        .store
        .patients
        .find(filter.clone())
        .with_options(options)
        .await?
        .try_collect()
        .await?;
    let count = state.store.patients.count_documents(filter).await?;
    let total = state
        .store
        .patients
        .count_documents(doc! { "clinicId": clinic_id })
        .await?;
    Ok(Json(json!({
        "data": patients.iter().map(to_json).collect::<Vec<_>>(),
        "meta": { "count": count, "totalCount": total },
    })))
}

/// `POST /v1/clinics/{clinicId}/patients`: members and services create a custodial patient
/// (`fullName` and `birthDate` required; the clinic holds custodian, view, upload and note).
/// There is no identity service here to create the account in: the patient gets a fresh
/// UUID user id, which the account created later must adopt.
#[utoipa::path(
    post,
    path = "/v1/clinics/{clinicId}/patients",
    operation_id = "CreatePatientAccount",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    request_body(content = serde_json::Value, description = "patient.v1", content_type = "application/json"),
    responses((status = 200, description = "patient.v1", body = serde_json::Value), (status = 400, description = "error.v1", body = serde_json::Value), (status = 401, description = "error.v1", body = serde_json::Value), (status = 403, description = "error.v1", body = serde_json::Value), (status = 404, description = "error.v1", body = serde_json::Value)),
    security(("sessionToken" = []))
)]
pub async fn create_custodial(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic_id): Path<String>,
    JsonBody(input): JsonBody<PatientInput>,
) -> ApiResult<Json<Value>> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    let found = clinics::find(&state, clinic_id).await?;
    require(&state.store, &caller, clinic_id, Need::Read).await?;
    let mut patient = input.profile(&found)?;
    for required in ["fullName", "birthDate"] {
        if !patient.contains_key(required) {
            return Err(bad(required, "is required"));
        }
    }
    let now = DateTime::now();
    patient.insert("_id", ObjectId::new());
    patient.insert("clinicId", clinic_id);
    patient.insert("userId", uuid::Uuid::new_v4().to_string());
    patient.insert("permissions", grants_document(&PERMISSIONS));
    patient.insert("invitedBy", &caller.user_id);
    patient.insert("createdTime", now);
    patient.insert("updatedTime", now);
    insert(&state, &patient, clinic_id).await?;
    Ok(Json(to_json(&patient)))
}

/// Inserts a new patient of `clinic`, then checks the clinic is still there and not being
/// deleted (`clinics::delete` marks it before counting patients); if it is not, the patient is
/// taken back and the answer is 404, so no patient outlives its clinic.
pub(crate) async fn insert(
    state: &AppState,
    patient: &Document,
    clinic: ObjectId,
) -> ApiResult<()> {
    state
        .store
        .patients
        .insert_one(patient)
        .await
        .map_err(conflict)?;
    if clinics::open_for_patients(state, clinic).await? {
        return Ok(());
    }
    let id = patient.get("_id").cloned().unwrap_or(Bson::Null);
    state.store.patients.delete_one(doc! { "_id": id }).await?;
    Err(ApiError::NotFound(format!(
        "clinic {} not found",
        clinic.to_hex()
    )))
}

/// `POST /v1/clinics/{clinicId}/patients/{patientId}`: services add an existing user with the
/// permissions they share (`createPatient.v1`). `fullName` and `birthDate` are required: the
/// reference reads them from the user's profile, which there is no service for here, and
/// `patient.v1` requires both.
#[utoipa::path(
    post,
    path = "/v1/clinics/{clinicId}/patients/{patientId}",
    operation_id = "CreatePatientFromUser",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("patientId" = String, Path)),
    request_body(content = serde_json::Value, description = "createPatient.v1", content_type = "application/json"),
    responses((status = 200, description = "patient.v1", body = serde_json::Value), (status = 400, description = "error.v1", body = serde_json::Value), (status = 401, description = "error.v1", body = serde_json::Value), (status = 403, description = "error.v1", body = serde_json::Value), (status = 404, description = "error.v1", body = serde_json::Value), (status = 409, description = "error.v1", body = serde_json::Value)),
    security(("sessionToken" = []))
)]
pub async fn create_from_user(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic_id, user)): Path<(String, String)>,
    JsonBody(input): JsonBody<PatientInput>,
) -> ApiResult<Json<Value>> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    let user = user_id("patientId", &user)?;
    super::access::require_service(&caller)?;
    let found = clinics::find(&state, clinic_id).await?;
    let grants = input
        .permissions
        .as_ref()
        .map(Permissions::granted)
        .unwrap_or_default();
    if grants.is_empty() {
        return Err(bad(
            "permissions",
            "at least one of custodian, view, upload, note",
        ));
    }
    let mut patient = input.profile(&found)?;
    // patient.v1 requires both; with no profile service here, the caller supplies them.
    for required in ["fullName", "birthDate"] {
        if !patient.contains_key(required) {
            return Err(bad(required, "is required"));
        }
    }
    let now = DateTime::now();
    patient.insert("_id", ObjectId::new());
    patient.insert("clinicId", clinic_id);
    patient.insert("userId", &user);
    patient.insert("permissions", grants_document(&grants));
    if let Some(migrated) = input.is_migrated {
        patient.insert("isMigrated", migrated);
    }
    if let Some(legacy) = &input.legacy_clinician_id {
        patient.insert(
            "legacyClinicianIds",
            vec![user_id("legacyClinicianId", legacy)?],
        );
    }
    patient.insert("createdTime", now);
    patient.insert("updatedTime", now);
    insert(&state, &patient, clinic_id).await?;
    Ok(Json(to_json(&patient)))
}

/// `GET /v1/clinics/{clinicId}/patients/{patientId}`: members and services.
#[utoipa::path(
    get,
    path = "/v1/clinics/{clinicId}/patients/{patientId}",
    operation_id = "GetPatient",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("patientId" = String, Path)),
    responses((status = 200, description = "patient.v1", body = serde_json::Value), (status = 401, description = "error.v1", body = serde_json::Value), (status = 403, description = "error.v1", body = serde_json::Value), (status = 404, description = "error.v1", body = serde_json::Value)),
    security(("sessionToken" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic_id, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    let user = user_id("patientId", &user)?;
    require(&state.store, &caller, clinic_id, Need::Read).await?;
    Ok(Json(to_json(&find(&state, clinic_id, &user).await?)))
}

/// `PUT /v1/clinics/{clinicId}/patients/{patientId}`: members and services; sets the profile
/// fields sent, keeps the others (permissions change through their own operations).
#[utoipa::path(
    put,
    path = "/v1/clinics/{clinicId}/patients/{patientId}",
    operation_id = "UpdatePatient",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("patientId" = String, Path)),
    request_body(content = serde_json::Value, description = "patient.v1", content_type = "application/json"),
    responses((status = 200, description = "patient.v1", body = serde_json::Value), (status = 400, description = "error.v1", body = serde_json::Value), (status = 401, description = "error.v1", body = serde_json::Value), (status = 403, description = "error.v1", body = serde_json::Value), (status = 404, description = "error.v1", body = serde_json::Value)),
    security(("sessionToken" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic_id, user)): Path<(String, String)>,
    JsonBody(input): JsonBody<PatientInput>,
) -> ApiResult<Json<Value>> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    let user = user_id("patientId", &user)?;
    require(&state.store, &caller, clinic_id, Need::Read).await?;
    let found = clinics::find(&state, clinic_id).await?;
    let before = find(&state, clinic_id, &user).await?;
    let mut set = input.profile(&found)?;
    set.insert("updatedTime", DateTime::now());
    let id = before
        .get_object_id("_id")
        .map_err(|e| ApiError::Internal(e.into()))?;
    state
        .store
        .patients
        .update_one(doc! { "_id": id }, doc! { "$set": set })
        .await?;
    Ok(Json(to_json(&find(&state, clinic_id, &user).await?)))
}

/// `DELETE /v1/clinics/{clinicId}/patients/{patientId}`: admins, services, or the patient;
/// archived to `patient_deletions` first.
#[utoipa::path(
    delete,
    path = "/v1/clinics/{clinicId}/patients/{patientId}",
    operation_id = "DeletePatient",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("patientId" = String, Path)),
    responses((status = 204, description = "no body"), (status = 401, description = "error.v1", body = serde_json::Value), (status = 403, description = "error.v1", body = serde_json::Value), (status = 404, description = "error.v1", body = serde_json::Value)),
    security(("sessionToken" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic_id, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    let user = user_id("patientId", &user)?;
    if caller.service || caller.user_id != user {
        require(&state.store, &caller, clinic_id, Need::Write).await?;
    }
    let patient = find(&state, clinic_id, &user).await?;
    state
        .store
        .archive_and_delete(Archived::Patient, &patient, &caller.user_id)
        .await?
        .ok_or_else(|| gone(clinic_id, &user))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Only the patient (or a service) changes what the patient shares.
fn require_self(caller: &Caller, user: &str) -> ApiResult<()> {
    if caller.service || caller.user_id == user {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// `PUT /v1/clinics/{clinicId}/patients/{patientId}/permissions`: the patient or a service
/// replaces the grants; a patient cannot add `custodian`; none left removes the patient.
#[utoipa::path(
    put,
    path = "/v1/clinics/{clinicId}/patients/{patientId}/permissions",
    operation_id = "UpdatePatientPermissions",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("patientId" = String, Path)),
    request_body(content = serde_json::Value, description = "patientPermissions.v1", content_type = "application/json"),
    responses((status = 200, description = "patientPermissions.v1", body = serde_json::Value), (status = 400, description = "error.v1", body = serde_json::Value), (status = 401, description = "error.v1", body = serde_json::Value), (status = 403, description = "error.v1", body = serde_json::Value), (status = 404, description = "error.v1", body = serde_json::Value)),
    security(("sessionToken" = []))
)]
pub async fn update_permissions(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic_id, user)): Path<(String, String)>,
    JsonBody(permissions): JsonBody<Permissions>,
) -> ApiResult<Json<Value>> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    let user = user_id("patientId", &user)?;
    require_self(&caller, &user)?;
    let patient = find(&state, clinic_id, &user).await?;
    let grants = permissions.granted();
    let had_custodian = patient
        .get_document("permissions")
        .is_ok_and(|p| p.contains_key("custodian"));
    if !caller.service && grants.contains(&"custodian") && !had_custodian {
        return Err(ApiError::Refused("a patient cannot grant custodian".into()));
    }
    if grants.is_empty() {
        state
            .store
            .archive_and_delete(Archived::Patient, &patient, &caller.user_id)
            .await?
            .ok_or_else(|| gone(clinic_id, &user))?;
        return Ok(Json(json!({})));
    }
    // Key by key: `permissions.<name>` set or unset, which is what the CDC event then says, and
    // which FerretDB 1.24 applies (it skips a `$set` of the whole `permissions` document when
    // old and new hold the same number of empty documents).
    let id = patient
        .get_object_id("_id")
        .map_err(|e| ApiError::Internal(e.into()))?;
    let mut set = doc! { "updatedTime": DateTime::now() };
    for grant in &grants {
        set.insert(format!("permissions.{grant}"), Document::new());
    }
    let mut update = doc! { "$set": set };
    let dropped: Document = PERMISSIONS
        .iter()
        .filter(|p| !grants.contains(p))
        .map(|p| (format!("permissions.{p}"), Bson::String(String::new())))
        .collect();
    if !dropped.is_empty() {
        update.insert("$unset", dropped);
    }
    state
        .store
        .patients
        .update_one(doc! { "_id": id }, update)
        .await?;
    let out: serde_json::Map<String, Value> = grants
        .iter()
        .map(|g| ((*g).to_owned(), json!({})))
        .collect();
    Ok(Json(Value::Object(out)))
}

/// `DELETE /v1/clinics/{clinicId}/patients/{patientId}/permissions/{permission}`: the patient
/// or a service drops one grant; none left removes the patient.
#[utoipa::path(
    delete,
    path = "/v1/clinics/{clinicId}/patients/{patientId}/permissions/{permission}",
    operation_id = "DeletePatientPermission",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("patientId" = String, Path), ("permission" = String, Path)),
    responses((status = 204, description = "no body"), (status = 400, description = "error.v1", body = serde_json::Value), (status = 401, description = "error.v1", body = serde_json::Value), (status = 403, description = "error.v1", body = serde_json::Value), (status = 404, description = "error.v1", body = serde_json::Value)),
    security(("sessionToken" = []))
)]
pub async fn delete_permission(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic_id, user, permission)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    let user = user_id("patientId", &user)?;
    if !PERMISSIONS.contains(&permission.as_str()) {
        return Err(bad(
            "permission",
            &format!("must be one of {PERMISSIONS:?}"),
        ));
    }
    require_self(&caller, &user)?;
    let patient = find(&state, clinic_id, &user).await?;
    let remaining: Vec<String> = patient
        .get_document("permissions")
        .map(|p| p.keys().filter(|k| **k != permission).cloned().collect())
        .unwrap_or_default();
    if remaining.is_empty() {
        state
            .store
            .archive_and_delete(Archived::Patient, &patient, &caller.user_id)
            .await?
            .ok_or_else(|| gone(clinic_id, &user))?;
        return Ok(StatusCode::NO_CONTENT);
    }
    let id = patient
        .get_object_id("_id")
        .map_err(|e| ApiError::Internal(e.into()))?;
    // `$unset` of one key: the CDC event says `permissions.<name>` was removed, as the reference.
    state
        .store
        .patients
        .update_one(
            doc! { "_id": id },
            doc! { "$unset": { format!("permissions.{permission}"): "" }, "$set": { "updatedTime": DateTime::now() } },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/patients/{userId}/clinics`: the patient and services; each patient record with its
/// clinic.
#[utoipa::path(
    get,
    path = "/v1/patients/{userId}/clinics",
    operation_id = "ListClinicsForPatient",
    tag = "Clinics",
    params(("userId" = String, Path), ("offset" = u64, Query), ("limit" = i64, Query)),
    responses((status = 200, description = "patientClinicRelationships.v1", body = serde_json::Value), (status = 401, description = "error.v1", body = serde_json::Value), (status = 403, description = "error.v1", body = serde_json::Value)),
    security(("sessionToken" = []))
)]
pub async fn clinics_of(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let user = user_id("userId", &user)?;
    require_self(&caller, &user)?;
    let (offset, limit) = params.page()?;
    let options = FindOptions::builder()
        .sort(doc! { "createdTime": 1, "_id": 1 })
        .skip(offset)
        .limit(limit)
        .build();
    let records: Vec<Document> = state
        .store
        .patients
        .find(doc! { "userId": &user })
        .with_options(options)
        .await?
        .try_collect()
        .await?;
    let mut out = Vec::with_capacity(records.len());
    for record in &records {
        let Ok(clinic_id) = record.get_object_id("clinicId") else {
            continue;
        };
        if let Some(found) = state
            .store
            .clinics
            .find_one(doc! { "_id": clinic_id })
            .await?
        {
            out.push(json!({ "patient": to_json(record), "clinic": clinics::to_json(&found) }));
        }
    }
    Ok(Json(Value::Array(out)))
}

/// `POST /v1/clinics/{clinicId}/patients/{patientId}/upload_reminder`: members and services;
/// stamps `lastUploadReminderTime` (the notifications processor mails the reminder from the CDC
/// event).
#[utoipa::path(
    post,
    path = "/v1/clinics/{clinicId}/patients/{patientId}/upload_reminder",
    operation_id = "SendUploadReminder",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("patientId" = String, Path)),
    responses((status = 200, description = "no body"), (status = 401, description = "error.v1", body = serde_json::Value), (status = 403, description = "error.v1", body = serde_json::Value), (status = 404, description = "error.v1", body = serde_json::Value)),
    security(("sessionToken" = []))
)]
pub async fn upload_reminder(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic_id, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    let user = user_id("patientId", &user)?;
    require(&state.store, &caller, clinic_id, Need::Read).await?;
    let patient = find(&state, clinic_id, &user).await?;
    let id = patient
        .get_object_id("_id")
        .map_err(|e| ApiError::Internal(e.into()))?;
    let now = DateTime::now();
    state
        .store
        .patients
        .update_one(
            doc! { "_id": id },
            doc! { "$set": { "lastUploadReminderTime": now, "updatedTime": now } },
        )
        .await?;
    Ok(StatusCode::OK)
}
