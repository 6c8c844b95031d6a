//! Patients of a clinic: list (members; search, tags, sort, paging; `{data, meta}`), create a
//! custodial patient (members), create from an existing user (services), get and update
//! (members; PUT never nulls omitted fields), delete (admins or the patient; archived first),
//! the patient's own permissions (replace, or drop one; a patient cannot grant `custodian`; no
//! permission left removes the record), the clinics of a patient, and the upload reminder.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, doc};
use futures::TryStreamExt as _;
use mongodb::options::FindOptions;

use super::access::{Need, require, require_clinic, require_while};
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{JsonBody, Params, Path, object_id, user_id};
use super::store::{Archived, regex_escape};
use super::validate::{bad, one_of};
use super::{AppState, clinics, limits};

mod model;
pub mod reviews;
mod store;
pub use model::{
    AcceptedInvitation, ConnectionRequest, ConnectionRequests, Grant, NewPatient, PERMISSIONS,
    PageMeta, Patient, PatientClinic, PatientInput, PatientPage, Permissions, Review,
    grants_document, invited_profile,
};
pub(crate) use store::insert;
use store::{find, gone};

/// Sortable fields (`sort=+fullName`, `-birthDate`, …).
const SORTABLE: [&str; 5] = ["fullName", "birthDate", "email", "mrn", "createdTime"];

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
    responses((status = 200, description = "patientsResponse.v1", body = PatientPage), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic_id): Path<String>,
    params: Params,
) -> ApiResult<Json<PatientPage>> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    require_clinic(&state.store, &caller, clinic_id, Need::Read).await?;
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
    let sort = doc! { field: direction, "_id": 1 };
    let (patients, count, total) =
        store::page(&state, clinic_id, filter, sort, offset, limit).await?;
    Ok(Json(PatientPage {
        data: patients.iter().map(Patient::from).collect(),
        meta: PageMeta {
            count,
            total_count: total,
        },
    }))
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
    request_body(content = PatientInput, description = "patient.v1"),
    responses((status = 200, description = "patient.v1", body = Patient), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn create_custodial(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic_id): Path<String>,
    JsonBody(input): JsonBody<PatientInput>,
) -> ApiResult<Json<Patient>> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    let found = clinics::find(&state, clinic_id).await?;
    require(&state.store, &caller, clinic_id, Need::Read).await?;
    let mut patient = input.new_profile(&found)?;
    let id = Bson::ObjectId(ObjectId::new());
    limits::check_mrn(&state, &found, &id, patient.get_str("mrn").ok()).await?;
    limits::check_limit(&state, &found).await?;
    let now = DateTime::now();
    patient.insert("_id", id);
    patient.insert("clinicId", clinic_id);
    patient.insert("userId", uuid::Uuid::new_v4().to_string());
    patient.insert("permissions", grants_document(&PERMISSIONS));
    patient.insert("invitedBy", &caller.user_id);
    patient.insert("createdTime", now);
    patient.insert("updatedTime", now);
    insert(&state, &patient, clinic_id).await?;
    Ok(Json(Patient::from(&patient)))
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
    request_body(content = NewPatient, description = "createPatient.v1"),
    responses((status = 200, description = "patient.v1", body = Patient), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 409, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn create_from_user(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic_id, user)): Path<(String, String)>,
    JsonBody(input): JsonBody<NewPatient>,
) -> ApiResult<Json<Patient>> {
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
    // patient.v1 requires both; with no profile service here, the caller supplies them.
    let mut patient = input.new_profile(&found)?;
    let id = Bson::ObjectId(ObjectId::new());
    limits::check_mrn(&state, &found, &id, patient.get_str("mrn").ok()).await?;
    let now = DateTime::now();
    patient.insert("_id", id);
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
    Ok(Json(Patient::from(&patient)))
}

/// `GET /v1/clinics/{clinicId}/patients/{patientId}`: members and services.
#[utoipa::path(
    get,
    path = "/v1/clinics/{clinicId}/patients/{patientId}",
    operation_id = "GetPatient",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("patientId" = String, Path)),
    responses((status = 200, description = "patient.v1", body = Patient), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic_id, user)): Path<(String, String)>,
) -> ApiResult<Json<Patient>> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    let user = user_id("patientId", &user)?;
    let read = find(&state, clinic_id, &user);
    let found = require_while(&state.store, &caller, clinic_id, Need::Read, read).await?;
    Ok(Json(Patient::from(&found)))
}

/// `PUT /v1/clinics/{clinicId}/patients/{patientId}`: members and services; sets the profile
/// fields sent, keeps the others (permissions change through their own operations).
#[utoipa::path(
    put,
    path = "/v1/clinics/{clinicId}/patients/{patientId}",
    operation_id = "UpdatePatient",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("patientId" = String, Path)),
    request_body(content = PatientInput, description = "patient.v1"),
    responses((status = 200, description = "patient.v1", body = Patient), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic_id, user)): Path<(String, String)>,
    JsonBody(input): JsonBody<PatientInput>,
) -> ApiResult<Json<Patient>> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    let user = user_id("patientId", &user)?;
    require(&state.store, &caller, clinic_id, Need::Read).await?;
    let found = clinics::find(&state, clinic_id).await?;
    let before = find(&state, clinic_id, &user).await?;
    let mut set = input.to_set(&found)?;
    let mrn = set.get_str("mrn").or_else(|_| before.get_str("mrn")).ok();
    let id = before.get("_id").cloned().unwrap_or(Bson::Null);
    limits::check_mrn(&state, &found, &id, mrn).await?;
    set.insert("updatedTime", DateTime::now());
    state
        .store
        .patients
        .update_one(doc! { "_id": id }, doc! { "$set": set })
        .await?;
    Ok(Json(Patient::from(&find(&state, clinic_id, &user).await?)))
}

/// `DELETE /v1/clinics/{clinicId}/patients/{patientId}`: admins, services, or the patient;
/// archived to `patient_deletions` first.
#[utoipa::path(
    delete,
    path = "/v1/clinics/{clinicId}/patients/{patientId}",
    operation_id = "DeletePatient",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("patientId" = String, Path)),
    responses((status = 204, description = "no body"), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
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
    request_body(content = Permissions, description = "patientPermissions.v1"),
    responses((status = 200, description = "patientPermissions.v1", body = Permissions), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn update_permissions(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic_id, user)): Path<(String, String)>,
    JsonBody(permissions): JsonBody<Permissions>,
) -> ApiResult<Json<Permissions>> {
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
        return Ok(Json(Permissions::default()));
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
    Ok(Json(Permissions::of(grants)))
}

/// `DELETE /v1/clinics/{clinicId}/patients/{patientId}/permissions/{permission}`: the patient
/// or a service drops one grant; none left removes the patient.
#[utoipa::path(
    delete,
    path = "/v1/clinics/{clinicId}/patients/{patientId}/permissions/{permission}",
    operation_id = "DeletePatientPermission",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("patientId" = String, Path), ("permission" = String, Path)),
    responses((status = 204, description = "no body"), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn delete_permission(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic_id, user, permission)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    let user = user_id("patientId", &user)?;
    one_of("permission", &permission, &PERMISSIONS)?;
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
    responses((status = 200, description = "patientClinicRelationships.v1", body = Vec<PatientClinic>), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn clinics_of(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
    params: Params,
) -> ApiResult<Json<Vec<PatientClinic>>> {
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
    let paired = clinics::with_clinics(&state, &records, PatientClinic::new).await?;
    Ok(Json(paired))
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
    responses((status = 200, description = "no body"), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
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
