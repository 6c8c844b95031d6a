//! Clinicians (members of a clinic): list (members; search, email, role, paging), create
//! (services), get (members), update (admins; role changes are appended to `rolesUpdates` with
//! who made them and the clinic's `admins` kept in step), delete (admins, or the member leaving;
//! archived first), and the clinics of a clinician (the user themself, services). Invites:
//! [`invites`].
//!
//! At least one admin per clinic: a change that would leave none answers 422. Without
//! transactions the check runs after the write and undoes it, so two racing demotions cannot
//! both succeed.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bson::{Bson, DateTime, Document, doc};
use futures::TryStreamExt as _;
use mongodb::options::FindOptions;

use super::access::{Need, require, require_clinic, require_while};
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{JsonBody, Params, Path, object_id, user_id};
use super::store::{Archived, regex_escape};
use super::validate::{email, one_of};
use super::{AppState, clinics};

pub mod invites;
mod model;
mod store;
pub use model::{
    ADMIN, AssociateClinician, Clinician, ClinicianClinic, ClinicianUpdate, InviteClinician,
    NewClinician, ROLES, is_admin,
};
use store::find;
pub use store::sync_admins;

/// `GET /v1/clinics/{clinicId}/clinicians`: members and services.
#[utoipa::path(
    get,
    path = "/v1/clinics/{clinicId}/clinicians",
    operation_id = "ListClinicians",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("search" = String, Query), ("email" = String, Query), ("role" = String, Query), ("offset" = u64, Query), ("limit" = i64, Query)),
    responses((status = 200, description = "clinicians.v1", body = Vec<Clinician>), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic): Path<String>,
    params: Params,
) -> ApiResult<Json<Vec<Clinician>>> {
    let clinic = object_id("clinicId", &clinic)?;
    require_clinic(&state.store, &caller, clinic, Need::Read).await?;
    let (offset, limit) = params.page()?;
    let mut filter = doc! { "clinicId": clinic };
    if let Some(search) = params.text("search").filter(|s| !s.trim().is_empty()) {
        // FerretDB has no text index: a case-insensitive substring match on the quoted input.
        let pattern = regex_escape(search.trim());
        filter.insert(
            "$or",
            vec![
                doc! { "name": { "$regex": &pattern, "$options": "i" } },
                doc! { "email": { "$regex": &pattern, "$options": "i" } },
            ],
        );
    }
    if let Some(address) = params.text("email") {
        filter.insert("email", email("query parameter email", address)?);
    }
    if let Some(role) = params.text("role") {
        filter.insert("roles", one_of("query parameter role", role, &ROLES)?);
    }
    let options = FindOptions::builder()
        .sort(doc! { "createdTime": 1, "_id": 1 })
        .skip(offset)
        .limit(limit)
        .build();
    let found: Vec<Document> = state
        .store
        .clinicians
        .find(filter)
        .with_options(options)
        .await?
        .try_collect()
        .await?;
    Ok(Json(found.iter().map(Clinician::from).collect()))
}

/// `POST /v1/clinics/{clinicId}/clinicians`: services (the invite flow creates clinicians).
#[utoipa::path(
    post,
    path = "/v1/clinics/{clinicId}/clinicians",
    operation_id = "CreateClinician",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    request_body(content = NewClinician, description = "clinician.v1"),
    responses((status = 200, description = "clinician.v1", body = Clinician), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 409, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic): Path<String>,
    JsonBody(input): JsonBody<NewClinician>,
) -> ApiResult<Json<Clinician>> {
    let clinic = object_id("clinicId", &clinic)?;
    super::access::require_service(&caller)?;
    clinics::find(&state, clinic).await?;
    let clinician = input.new_document(clinic, DateTime::now())?;
    // Taken back (404) if the clinic is being deleted: no clinician outlives its clinic.
    let taken = "the clinic already has a clinician with this user, invite or email";
    clinics::insert_member(&state, &state.store.clinicians, &clinician, clinic, taken).await?;
    if is_admin(&clinician) {
        sync_admins(&state, clinic).await?;
    }
    Ok(Json(Clinician::from(&clinician)))
}

/// `GET /v1/clinics/{clinicId}/clinicians/{clinicianId}`: members and services.
#[utoipa::path(
    get,
    path = "/v1/clinics/{clinicId}/clinicians/{clinicianId}",
    operation_id = "GetClinician",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("clinicianId" = String, Path)),
    responses((status = 200, description = "clinician.v1", body = Clinician), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic, user)): Path<(String, String)>,
) -> ApiResult<Json<Clinician>> {
    let clinic = object_id("clinicId", &clinic)?;
    let user = user_id("clinicianId", &user)?;
    let read = find(&state, clinic, &user);
    let found = require_while(&state.store, &caller, clinic, Need::Read, read).await?;
    Ok(Json(Clinician::from(&found)))
}

/// `PUT /v1/clinics/{clinicId}/clinicians/{clinicianId}`: admins and services. Sets `name`
/// and `roles` as given; a role change appends `{roles, updatedBy}` to `rolesUpdates`.
#[utoipa::path(
    put,
    path = "/v1/clinics/{clinicId}/clinicians/{clinicianId}",
    operation_id = "UpdateClinician",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("clinicianId" = String, Path)),
    request_body(content = ClinicianUpdate, description = "clinician.v1"),
    responses((status = 200, description = "clinician.v1", body = Clinician), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 422, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic, user)): Path<(String, String)>,
    JsonBody(input): JsonBody<ClinicianUpdate>,
) -> ApiResult<Json<Clinician>> {
    let clinic = object_id("clinicId", &clinic)?;
    let user = user_id("clinicianId", &user)?;
    require(&state.store, &caller, clinic, Need::Write).await?;
    let before = find(&state, clinic, &user).await?;
    let mut set = doc! { "updatedTime": DateTime::now() };
    if let Some(name) = input.name()? {
        set.insert("name", name);
    }
    let mut update = Document::new();
    let old_roles = before.get_array("roles").cloned().unwrap_or_default();
    if let Some(new_roles) = input.roles()? {
        let new_bson: Vec<Bson> = new_roles.iter().cloned().map(Bson::String).collect();
        if new_bson != old_roles {
            set.insert("roles", &new_roles);
            update.insert(
                "$push",
                doc! { "rolesUpdates": { "roles": &new_roles, "updatedBy": &caller.user_id } },
            );
        }
    }
    update.insert("$set", set);
    let id = before
        .get_object_id("_id")
        .map_err(|e| ApiError::Internal(e.into()))?;
    state
        .store
        .clinicians
        .update_one(doc! { "_id": id }, update)
        .await?;
    if sync_admins(&state, clinic).await? == 0 {
        // Undo: the clinic must keep an admin.
        state
            .store
            .clinicians
            .update_one(
                doc! { "_id": id },
                doc! { "$set": { "roles": old_roles, "updatedTime": before.get_datetime("updatedTime").ok().copied().unwrap_or_else(DateTime::now) }, "$pop": { "rolesUpdates": 1 } },
            )
            .await?;
        sync_admins(&state, clinic).await?;
        return Err(ApiError::Unprocessable(
            "a clinic needs at least one CLINIC_ADMIN".into(),
        ));
    }
    Ok(Json(Clinician::from(&find(&state, clinic, &user).await?)))
}

/// `DELETE /v1/clinics/{clinicId}/clinicians/{clinicianId}`: admins, services, or the member
/// leaving; archived to `clinician_deletions` first; 422 for the last admin.
#[utoipa::path(
    delete,
    path = "/v1/clinics/{clinicId}/clinicians/{clinicianId}",
    operation_id = "DeleteClinician",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("clinicianId" = String, Path)),
    responses((status = 200, description = "no body"), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 422, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let clinic = object_id("clinicId", &clinic)?;
    let user = user_id("clinicianId", &user)?;
    let need = if !caller.service && caller.user_id == user {
        Need::Read
    } else {
        Need::Write
    };
    require(&state.store, &caller, clinic, need).await?;
    let clinician = find(&state, clinic, &user).await?;
    let was_admin = is_admin(&clinician);
    if was_admin {
        let admins = state
            .store
            .clinicians
            .count_documents(
                doc! { "clinicId": clinic, "roles": ADMIN, "userId": { "$exists": true } },
            )
            .await?;
        if admins <= 1 {
            return Err(ApiError::Unprocessable(
                "a clinic needs at least one CLINIC_ADMIN".into(),
            ));
        }
    }
    // Of racing deletes of one clinician only the one that removed it goes on; the others
    // answer 404 with no archive left behind.
    let Some(archived) = state
        .store
        .archive_and_delete(Archived::Clinician, &clinician, &caller.user_id)
        .await?
    else {
        return Err(ApiError::NotFound(format!(
            "clinician {user} not found in clinic {}",
            clinic.to_hex()
        )));
    };
    if was_admin && sync_admins(&state, clinic).await? == 0 {
        // A racing removal took the other admin: put this one back.
        state
            .store
            .restore(Archived::Clinician, &clinician, &archived)
            .await?;
        sync_admins(&state, clinic).await?;
        return Err(ApiError::Unprocessable(
            "a clinic needs at least one CLINIC_ADMIN".into(),
        ));
    }
    Ok(StatusCode::OK)
}

/// `GET /v1/clinicians/{userId}/clinics`: the user themself and services; each membership
/// with its clinic.
#[utoipa::path(
    get,
    path = "/v1/clinicians/{userId}/clinics",
    operation_id = "ListClinicsForClinician",
    tag = "Clinics",
    params(("userId" = String, Path), ("offset" = u64, Query), ("limit" = i64, Query)),
    responses((status = 200, description = "clinicianClinicRelationships.v1", body = Vec<ClinicianClinic>), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn clinics_of(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
    params: Params,
) -> ApiResult<Json<Vec<ClinicianClinic>>> {
    let user = user_id("userId", &user)?;
    if !caller.service && caller.user_id != user {
        return Err(ApiError::Forbidden);
    }
    let (offset, limit) = params.page()?;
    let options = FindOptions::builder()
        .sort(doc! { "createdTime": 1, "_id": 1 })
        .skip(offset)
        .limit(limit)
        .build();
    let memberships: Vec<Document> = state
        .store
        .clinicians
        .find(doc! { "userId": &user })
        .with_options(options)
        .await?
        .try_collect()
        .await?;
    let paired = clinics::with_clinics(&state, &memberships, ClinicianClinic::new).await?;
    Ok(Json(paired))
}
