//! Clinics: list (services), create (the caller becomes CLINIC_ADMIN), get, get by share code,
//! update (admins, services; PUT never nulls omitted fields), delete (admins; only without
//! patients, archived to `clinic_deletions` first).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use futures::TryStreamExt as _;
use mongodb::options::FindOptions;

use super::access::{Need, require, require_clinic, require_service};
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody, is_duplicate_key};
use super::extract::{JsonBody, Params, object_id};
use super::validate::bad;
use super::{AppState, share_code, time};

mod model;
pub use model::{Clinic, ClinicInput, TIMEZONES};

/// Set on a clinic while it is being deleted (the time it began); never shown.
const DELETING: &str = "deletingSince";

/// How long a deletion mark holds: one left by a request that died halfway stops blocking
/// new patients and clinicians after this.
const DELETING_HOLDS: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether patients and clinicians may be added to the clinic: it exists and no deletion is
/// under way.
async fn open_for_members(state: &AppState, id: ObjectId) -> ApiResult<bool> {
    let Some(clinic) = state.store.clinics.find_one(doc! { "_id": id }).await? else {
        return Ok(false);
    };
    let deleting = clinic.get_datetime(DELETING).ok().is_some_and(|since| {
        let age = DateTime::now().timestamp_millis() - since.timestamp_millis();
        u128::try_from(age).unwrap_or(0) < DELETING_HOLDS.as_millis()
    });
    Ok(!deleting)
}

/// Inserts `member` (a patient or a clinician of `clinic`) into `collection`, then checks the
/// clinic is still there and not being deleted ([`delete`] marks it before it counts patients
/// and lists clinicians); if it is not, the record is taken back and the answer is 404, so no
/// patient or clinician outlives its clinic. FerretDB has no transactions to do this in one
/// step. `taken` words a unique-index conflict.
///
/// # Errors
/// 404 as above; `taken`'s conflict; database failures.
pub async fn insert_member(
    state: &AppState,
    collection: &mongodb::Collection<Document>,
    member: &Document,
    clinic: ObjectId,
    taken: &str,
) -> ApiResult<()> {
    collection
        .insert_one(member)
        .await
        .map_err(super::error::taken(taken))?;
    if open_for_members(state, clinic).await? {
        return Ok(());
    }
    let id = member.get("_id").cloned().unwrap_or(bson::Bson::Null);
    collection.delete_one(doc! { "_id": id }).await?;
    Err(ApiError::NotFound(format!(
        "clinic {} not found",
        clinic.to_hex()
    )))
}

/// Each of `records` (a user's clinician or patient records) paired with its clinic by `pair`,
/// the clinics read in one query; a record whose clinic is gone is left out.
///
/// # Errors
/// Database failures.
pub async fn with_clinics<T>(
    state: &AppState,
    records: &[Document],
    pair: impl Fn(&Document, &Document) -> T,
) -> ApiResult<Vec<T>> {
    let ids: Vec<ObjectId> = records
        .iter()
        .filter_map(|r| r.get_object_id("clinicId").ok())
        .collect();
    let found: Vec<Document> = state
        .store
        .clinics
        .find(doc! { "_id": { "$in": ids } })
        .await?
        .try_collect()
        .await?;
    let clinics: std::collections::HashMap<ObjectId, Document> = found
        .into_iter()
        .filter_map(|c| Some((c.get_object_id("_id").ok()?, c)))
        .collect();
    Ok(records
        .iter()
        .filter_map(|r| Some(pair(r, clinics.get(&r.get_object_id("clinicId").ok()?)?)))
        .collect())
}

/// The clinic `id`, or 404.
///
/// # Errors
/// 404 when there is none; database failures.
pub async fn find(state: &AppState, id: ObjectId) -> ApiResult<Document> {
    state
        .store
        .clinics
        .find_one(doc! { "_id": id })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("clinic {} not found", id.to_hex())))
}

/// `GET /v1/clinics` (backend services): `limit`, `offset`, `shareCode`, `createdTimeStart`
/// (inclusive), `createdTimeEnd` (exclusive).
#[utoipa::path(
    get,
    path = "/v1/clinics",
    operation_id = "ListClinics",
    tag = "Clinics",
    params(("limit" = i64, Query), ("offset" = u64, Query), ("shareCode" = String, Query), ("createdTimeStart" = String, Query), ("createdTimeEnd" = String, Query)),
    responses((status = 200, description = "clinics.v1", body = Vec<Clinic>), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> ApiResult<Json<Vec<Clinic>>> {
    require_service(&caller)?;
    let (offset, limit) = params.page()?;
    let mut filter = Document::new();
    if let Some(code) = params.text("shareCode") {
        filter.insert("shareCodes", code);
    }
    let mut created = Document::new();
    for (name, operator) in [("createdTimeStart", "$gte"), ("createdTimeEnd", "$lt")] {
        if let Some(text) = params.text(name) {
            let at = time::parse(text).ok_or_else(|| {
                bad(
                    &format!("query parameter {name}"),
                    "must be an RFC 3339 date-time",
                )
            })?;
            created.insert(operator, at);
        }
    }
    if !created.is_empty() {
        filter.insert("createdTime", created);
    }
    let options = FindOptions::builder()
        .sort(doc! { "createdTime": 1, "_id": 1 })
        .skip(offset)
        .limit(limit)
        .build();
    let clinics: Vec<Document> = state
        .store
        .clinics
        .find(filter)
        .with_options(options)
        .await?
        .try_collect()
        .await?;
    Ok(Json(clinics.iter().map(Clinic::from).collect()))
}

/// `POST /v1/clinics`: any user; the caller becomes the clinic's CLINIC_ADMIN.
#[utoipa::path(
    post,
    path = "/v1/clinics",
    operation_id = "CreateClinic",
    tag = "Clinics",
    request_body(content = ClinicInput, description = "clinic.v1"),
    responses((status = 200, description = "clinic.v1", body = Clinic), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<ClinicInput>,
) -> ApiResult<Json<Clinic>> {
    if caller.service {
        return Err(ApiError::Refused(
            "a clinic is created by the user who will administer it, not by a service".into(),
        ));
    }
    let mut clinic = input.to_set()?;
    if !clinic.contains_key("name") {
        return Err(bad("name", "is required"));
    }
    // The creator becomes a clinician, and every clinician has an address (clinician.v1).
    let email = caller.email.clone().ok_or_else(|| {
        ApiError::BadRequest(
            "the token carries no email claim; the clinic's admin needs an address".into(),
        )
    })?;
    let now = DateTime::now();
    let id = ObjectId::new();
    clinic.insert("_id", id);
    clinic.insert("admins", vec![caller.user_id.clone()]);
    clinic.insert("isMigrated", false);
    clinic.insert("tier", "tier0100");
    if !clinic.contains_key("PreferredBgUnits") {
        clinic.insert("PreferredBgUnits", "mg/dL");
    }
    clinic.insert("createdTime", now);
    clinic.insert("updatedTime", now);
    // A collision with an existing code is astronomically rare but possible: draw again.
    let mut attempts = 0;
    loop {
        let code = share_code::generate();
        clinic.insert("canonicalShareCode", &code);
        clinic.insert("shareCodes", vec![code]);
        match state.store.clinics.insert_one(&clinic).await {
            Ok(_) => break,
            Err(error) if is_duplicate_key(&error) && attempts < 100 => attempts += 1,
            Err(error) => return Err(error.into()),
        }
    }
    let mut admin = doc! {
        "clinicId": id, "userId": &caller.user_id, "email": email.to_lowercase(),
        "roles": ["CLINIC_ADMIN"], "createdTime": now, "updatedTime": now,
    };
    if let Some(name) = &caller.name {
        admin.insert("name", name);
    }
    // No transactions on FerretDB: undo the clinic if its admin cannot be written.
    if let Err(error) = state.store.clinicians.insert_one(admin).await {
        let _ = state.store.clinics.delete_one(doc! { "_id": id }).await;
        return Err(error.into());
    }
    Ok(Json(Clinic::from(&clinic)))
}

/// `GET /v1/clinics/{clinicId}`: any authenticated caller.
#[utoipa::path(
    get,
    path = "/v1/clinics/{clinicId}",
    operation_id = "GetClinic",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    responses((status = 200, description = "clinic.v1", body = Clinic), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Clinic>> {
    let id = object_id("clinicId", &id)?;
    Ok(Json(Clinic::from(&find(&state, id).await?)))
}

/// `GET /v1/clinics/share_code/{shareCode}`: any authenticated caller; any of the clinic's codes.
#[utoipa::path(
    get,
    path = "/v1/clinics/share_code/{shareCode}",
    operation_id = "GetClinicByShareCode",
    tag = "Clinics",
    params(("shareCode" = String, Path)),
    responses((status = 200, description = "clinic.v1", body = Clinic), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn get_by_share_code(
    State(state): State<AppState>,
    _caller: Caller,
    Path(code): Path<String>,
) -> ApiResult<Json<Clinic>> {
    let code = code.to_uppercase();
    if !share_code::is_valid(&code) {
        return Err(bad(
            "shareCode",
            "must be three groups of four characters, like ABCD-EFGH-JKLM",
        ));
    }
    let clinic = state
        .store
        .clinics
        .find_one(doc! { "shareCodes": &code })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no clinic has share code {code}")))?;
    Ok(Json(Clinic::from(&clinic)))
}

/// `PUT /v1/clinics/{clinicId}`: admins and services; sets what the body gives, nothing else.
#[utoipa::path(
    put,
    path = "/v1/clinics/{clinicId}",
    operation_id = "UpdateClinic",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    request_body(content = ClinicInput, description = "clinic.v1"),
    responses((status = 200, description = "clinic.v1", body = Clinic), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<ClinicInput>,
) -> ApiResult<Json<Clinic>> {
    let id = object_id("clinicId", &id)?;
    require_clinic(&state.store, &caller, id, Need::Write).await?;
    let mut set = input.to_set()?;
    set.insert("updatedTime", DateTime::now());
    state
        .store
        .clinics
        .update_one(doc! { "_id": id }, doc! { "$set": set })
        .await?;
    Ok(Json(Clinic::from(&find(&state, id).await?)))
}

/// `DELETE /v1/clinics/{clinicId}`: admins; refused (409) while the clinic has patients. The
/// clinic and its clinicians are archived before they are deleted.
#[utoipa::path(
    delete,
    path = "/v1/clinics/{clinicId}",
    operation_id = "DeleteClinic",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    responses((status = 204, description = "no body"), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 409, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = object_id("clinicId", &id)?;
    let clinic = find(&state, id).await?;
    if caller.service {
        return Err(ApiError::Forbidden);
    }
    require(&state.store, &caller, id, Need::Write).await?;
    // Marked before the patients are counted: a patient added after the count sees the mark
    // and takes itself back (`insert_member`), so no patient outlives its clinic. FerretDB
    // has no transactions to do this in one step.
    let now = DateTime::now();
    state
        .store
        .clinics
        .update_one(doc! { "_id": id }, doc! { "$set": { DELETING: now } })
        .await?;
    let patients = state
        .store
        .patients
        .count_documents(doc! { "clinicId": id })
        .await?;
    if patients > 0 {
        state
            .store
            .clinics
            .update_one(doc! { "_id": id }, doc! { "$unset": { DELETING: "" } })
            .await?;
        return Err(ApiError::Conflict(format!(
            "the clinic has {patients} patient(s); remove them first"
        )));
    }
    let clinicians: Vec<Document> = state
        .store
        .clinicians
        .find(doc! { "clinicId": id })
        .await?
        .try_collect()
        .await?;
    for clinician in &clinicians {
        state
            .store
            .clinician_deletions
            .insert_one(doc! { "deletedTime": now, "deletedByUserId": &caller.user_id, "clinician": clinician })
            .await?;
    }
    state
        .store
        .clinic_deletions
        .insert_one(
            doc! { "deletedTime": now, "deletedByUserId": &caller.user_id, "clinic": &clinic },
        )
        .await?;
    state
        .store
        .clinicians
        .delete_many(doc! { "clinicId": id })
        .await?;
    state.store.clinics.delete_one(doc! { "_id": id }).await?;
    Ok(StatusCode::NO_CONTENT)
}
