//! Clinician invites: an admin invites an address (`InviteClinician`, hydrophone's route in
//! Tidepool), which stores a placeholder clinician with an `inviteId` and no user; the
//! notifications processor mails the invitation (`clinician_invitation`) from that insert. The
//! service that confirms invites reads the placeholder (`GetInvitedClinician`), turns it into a
//! member when the invitee accepts (`AssociateClinicianToUser`) or drops it
//! (`DeleteInvitedClinician`); an admin may revoke a pending invite (`DeleteInvite`).
//!
//! A placeholder is a clinician without `userId`: it grants nothing, is not in the clinic's
//! `admins` until accepted, and counts for the orphan rule of a user's deletion (as Tidepool's).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};

use super::model::{AssociateClinician, Clinician, InviteClinician, is_admin};
use super::sync_admins;
use crate::api::AppState;
use crate::api::access::{Need, require, require_service};
use crate::api::auth::Caller;
use crate::api::clinics;
use crate::api::error::{ApiError, ApiResult, ErrorBody, taken};
use crate::api::extract::{JsonBody, Path, object_id};
use crate::api::validate::non_empty;

/// The pending invite `invite` of `clinic` (a clinician without a user), or 404.
async fn pending(state: &AppState, clinic: ObjectId, invite: &str) -> ApiResult<Document> {
    state
        .store
        .clinicians
        .find_one(pending_filter(clinic, invite))
        .await?
        .ok_or_else(|| not_found(clinic, invite))
}

fn pending_filter(clinic: ObjectId, invite: &str) -> Document {
    doc! { "clinicId": clinic, "inviteId": invite, "userId": { "$exists": false } }
}

fn not_found(clinic: ObjectId, invite: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no pending clinician invite {invite} in clinic {}",
        clinic.to_hex()
    ))
}

/// The path's clinic and invite, validated.
fn ids(clinic: &str, invite: &str) -> ApiResult<(ObjectId, String)> {
    Ok((
        object_id("clinicId", clinic)?,
        non_empty("inviteId", invite)?.to_owned(),
    ))
}

/// `POST /v1/clinics/{clinicId}/invites/clinicians`: admins and services. Stores the invite
/// placeholder under a new 32-character invite id; 409 when the address is already a member
/// or invited.
#[utoipa::path(
    post,
    path = "/v1/clinics/{clinicId}/invites/clinicians",
    operation_id = "InviteClinician",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    request_body(content = InviteClinician, description = "inviteClinician.v1"),
    responses((status = 200, description = "clinician.v1", body = Clinician), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 409, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn invite(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic): Path<String>,
    JsonBody(input): JsonBody<InviteClinician>,
) -> ApiResult<Json<Clinician>> {
    let clinic = object_id("clinicId", &clinic)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    // Validated before the clinic is read: a bad body is a 400 whoever asks.
    let placeholder = input
        .placeholder(id)
        .new_document(clinic, DateTime::now())?;
    require(&state.store, &caller, clinic, Need::Write).await?;
    clinics::find(&state, clinic).await?;
    let taken = "the clinic already has a member or an invite with this email";
    clinics::insert_member(&state, &state.store.clinicians, &placeholder, clinic, taken).await?;
    Ok(Json(Clinician::from(&placeholder)))
}

/// `DELETE /v1/clinics/{clinicId}/invites/clinicians/{inviteId}`: admins and services revoke
/// a pending invite; 404 when there is none.
#[utoipa::path(
    delete,
    path = "/v1/clinics/{clinicId}/invites/clinicians/{inviteId}",
    operation_id = "DeleteInvite",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("inviteId" = String, Path)),
    responses((status = 200, description = "no body"), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic, invite)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (clinic, invite) = ids(&clinic, &invite)?;
    require(&state.store, &caller, clinic, Need::Write).await?;
    remove(&state, clinic, &invite).await
}

/// `GET /v1/clinics/{clinicId}/invites/clinicians/{inviteId}/clinician`: services.
#[utoipa::path(
    get,
    path = "/v1/clinics/{clinicId}/invites/clinicians/{inviteId}/clinician",
    operation_id = "GetInvitedClinician",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("inviteId" = String, Path)),
    responses((status = 200, description = "clinician.v1", body = Clinician), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn get_invited(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic, invite)): Path<(String, String)>,
) -> ApiResult<Json<Clinician>> {
    let (clinic, invite) = ids(&clinic, &invite)?;
    require_service(&caller)?;
    Ok(Json(Clinician::from(
        &pending(&state, clinic, &invite).await?,
    )))
}

/// `PATCH /v1/clinics/{clinicId}/invites/clinicians/{inviteId}/clinician`: services, when the
/// invitee accepted. The placeholder becomes the user's membership (`userId` set, `inviteId`
/// gone) and, for an admin's invite, the clinic's `admins` follow; 404 without a pending invite,
/// 409 when the user is a member already.
#[utoipa::path(
    patch,
    path = "/v1/clinics/{clinicId}/invites/clinicians/{inviteId}/clinician",
    operation_id = "AssociateClinicianToUser",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("inviteId" = String, Path)),
    request_body(content = AssociateClinician, description = "associateClinicianToUser.v1"),
    responses((status = 200, description = "clinician.v1", body = Clinician), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 409, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn associate(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic, invite)): Path<(String, String)>,
    JsonBody(input): JsonBody<AssociateClinician>,
) -> ApiResult<Json<Clinician>> {
    let (clinic, invite) = ids(&clinic, &invite)?;
    let user = input.user()?;
    require_service(&caller)?;
    // The filter keeps the invite pending: of two racing acceptances one finds nothing.
    let accepted = state
        .store
        .clinicians
        .find_one_and_update(
            pending_filter(clinic, &invite),
            doc! {
                "$set": { "userId": &user, "updatedTime": DateTime::now() },
                "$unset": { "inviteId": "" },
            },
        )
        .return_document(mongodb::options::ReturnDocument::After)
        .await
        .map_err(taken("the user is already a clinician of this clinic"))?
        .ok_or_else(|| not_found(clinic, &invite))?;
    if is_admin(&accepted) {
        sync_admins(&state, clinic).await?;
    }
    Ok(Json(Clinician::from(&accepted)))
}

/// `DELETE /v1/clinics/{clinicId}/invites/clinicians/{inviteId}/clinician`: services drop the
/// placeholder (the invite was declined or expired); 404 when there is none.
#[utoipa::path(
    delete,
    path = "/v1/clinics/{clinicId}/invites/clinicians/{inviteId}/clinician",
    operation_id = "DeleteInvitedClinician",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("inviteId" = String, Path)),
    responses((status = 200, description = "no body"), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn delete_invited(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic, invite)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (clinic, invite) = ids(&clinic, &invite)?;
    require_service(&caller)?;
    remove(&state, clinic, &invite).await
}

/// Deletes the pending invite; 404 when there is none.
async fn remove(state: &AppState, clinic: ObjectId, invite: &str) -> ApiResult<StatusCode> {
    let removed = state
        .store
        .clinicians
        .delete_one(pending_filter(clinic, invite))
        .await?;
    if removed.deleted_count == 0 {
        return Err(not_found(clinic, invite));
    }
    Ok(StatusCode::OK)
}
