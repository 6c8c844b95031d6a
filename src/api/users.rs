//! The user lifecycle, for backend services: a deleted account leaves every clinic, and a changed
//! email follows into every clinician and patient record of the user.

use axum::extract::State;
use axum::http::StatusCode;
use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use futures::TryStreamExt as _;
use serde::Deserialize;

use super::AppState;
use super::access::require_service;
use super::auth::Caller;
use super::clinicians;
use super::error::{ApiResult, ErrorBody, taken};
use super::extract::{JsonBody, Path, user_id};
use super::store::Archived;
use super::validate::email;

/// `updateUserDetails.v1`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UserDetails {
    /// The user's new address.
    email: Option<String>,
}

/// `DELETE /v1/users/{userId}/clinics`: services. Every patient record of the user, then every
/// clinician record, each archived first; a clinic left without clinicians (members or pending
/// invites, as Tidepool counts them) loses its non-custodial patients (custodial ones stay, to be
/// claimed), and its `admins` follow. The
/// deletions processor does the same from the CDC side (`docs/processors.md`).
#[utoipa::path(
    delete,
    path = "/v1/users/{userId}/clinics",
    operation_id = "DeleteUserFromClinics",
    tag = "Clinics",
    params(("userId" = String, Path)),
    responses((status = 200, description = "no body"), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
) -> ApiResult<StatusCode> {
    let user = user_id("userId", &user)?;
    require_service(&caller)?;
    let by = caller.user_id.as_str();
    let patients: Vec<Document> = state
        .store
        .patients
        .find(doc! { "userId": &user })
        .await?
        .try_collect()
        .await?;
    // `archive_and_delete` answers `None` for a document a racing request removed first:
    // nothing left to do for it here.
    for patient in &patients {
        state
            .store
            .archive_and_delete(Archived::Patient, patient, by)
            .await?;
    }
    let clinicians: Vec<Document> = state
        .store
        .clinicians
        .find(doc! { "userId": &user })
        .await?
        .try_collect()
        .await?;
    let mut clinics: Vec<ObjectId> = Vec::new();
    for clinician in &clinicians {
        if let Ok(clinic) = clinician.get_object_id("clinicId") {
            clinics.push(clinic);
        }
        state
            .store
            .archive_and_delete(Archived::Clinician, clinician, by)
            .await?;
    }
    clinics.sort();
    clinics.dedup();
    for clinic in clinics {
        clinicians::sync_admins(&state, clinic).await?;
        let members = state
            .store
            .clinicians
            .count_documents(doc! { "clinicId": clinic })
            .await?;
        if members == 0 {
            let orphans: Vec<Document> = state
                .store
                .patients
                .find(doc! { "clinicId": clinic, "permissions.custodian": { "$exists": false } })
                .await?
                .try_collect()
                .await?;
            for patient in &orphans {
                state
                    .store
                    .archive_and_delete(Archived::Patient, patient, by)
                    .await?;
            }
        }
    }
    Ok(StatusCode::OK)
}

/// `POST /v1/users/{userId}/clinics`: services propagate a changed email to the user's
/// clinician and patient records; 204.
#[utoipa::path(
    post,
    path = "/v1/users/{userId}/clinics",
    operation_id = "UpdateClinicUserDetails",
    tag = "Clinics",
    params(("userId" = String, Path)),
    request_body(content = UserDetails, description = "updateUserDetails.v1"),
    responses((status = 204, description = "no body"), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 409, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
    JsonBody(details): JsonBody<UserDetails>,
) -> ApiResult<StatusCode> {
    let user = user_id("userId", &user)?;
    require_service(&caller)?;
    let Some(address) = details.email.as_deref() else {
        return Ok(StatusCode::NO_CONTENT);
    };
    let address = email("email", address)?;
    let now = DateTime::now();
    let set = doc! { "$set": { "email": &address, "updatedTime": now } };
    state
        .store
        .clinicians
        .update_many(doc! { "userId": &user }, set.clone())
        .await
        .map_err(taken(
            "another clinician of one of the user's clinics has this email",
        ))?;
    state
        .store
        .patients
        .update_many(doc! { "userId": &user }, set)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
