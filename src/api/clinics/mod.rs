//! Clinics: list (services), create (the caller becomes CLINIC_ADMIN), get, get by share code,
//! update (admins, services; PUT never nulls omitted fields), delete (admins; only without
//! patients, archived to `clinic_deletions` first).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bson::{DateTime, Document, doc};

use super::access::{Need, require, require_clinic, require_service};
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{JsonBody, Params, Path, object_id};
use super::validate::bad;
use super::{AppState, share_code, time};

mod model;
mod store;
pub use model::{Clinic, ClinicInput, TIMEZONES};
pub use store::{create as create_with_admin, edit_list, find, insert_member, with_clinics};

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
    let clinics = store::page(&state, filter, offset, limit).await?;
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
    let clinic = input.to_set()?;
    if !clinic.contains_key("name") {
        return Err(bad("name", "is required"));
    }
    // The creator becomes a clinician, and every clinician has an address (clinician.v1).
    let email = caller.email.clone().ok_or_else(|| {
        ApiError::BadRequest(
            "the token carries no email claim; the clinic's admin needs an address".into(),
        )
    })?;
    let clinic = store::create(
        &state,
        clinic,
        &caller.user_id,
        &email,
        caller.name.as_deref(),
    )
    .await?;
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
    // Any text is a valid lookup (the contract asks only for one character); one that cannot
    // be a share code is simply nobody's.
    if !share_code::is_valid(&code) {
        return Err(ApiError::NotFound(format!(
            "no clinic has share code {code}"
        )));
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
    store::delete(&state, &clinic, &caller.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
