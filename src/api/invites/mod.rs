//! Patient invites: a patient invites a clinic by its share code with the permissions they
//! offer (hydrophone's `POST /confirm/send/invite/{userId}/clinic`), stored in
//! `patient_invites` as a confirmation; the clinic's members list the pending ones and accept
//! (the patient is created with those permissions) or decline. The insert is what the
//! notifications processor mails to the clinic's admins (`patient_clinic_invitation`).

use axum::Json;
use axum::extract::State;
use bson::{DateTime, Document, doc};
use futures::TryStreamExt as _;

use super::access::{Need, require, require_clinic};
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody, taken};
use super::extract::{JsonBody, Path, object_id, user_id};
use super::patients::{self, AcceptedInvitation, Patient};
use super::{AppState, clinics, limits, share_code};

mod model;
pub use model::{Confirmation, Invitation};

/// `POST /confirm/send/invite/{userId}/clinic`: the patient themself (or a service on their
/// behalf); 404 for an unknown share code, 409 when already a patient or already pending;
/// a patient cannot offer `custodian`.
#[utoipa::path(
    post,
    path = "/confirm/send/invite/{userId}/clinic",
    operation_id = "SendPatientInvite",
    tag = "Clinics",
    params(("userId" = String, Path)),
    request_body(content = Invitation, description = "patientInvitation"),
    responses((status = 200, description = "confirmation.v1", body = Confirmation), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 409, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
    JsonBody(invitation): JsonBody<Invitation>,
) -> ApiResult<Json<Confirmation>> {
    let user = user_id("userId", &user)?;
    if !caller.service && caller.user_id != user {
        return Err(ApiError::Forbidden);
    }
    let code = invitation.share_code.trim().to_uppercase();
    if !share_code::is_valid(&code) {
        return Err(ApiError::BadRequest(
            "shareCode: must be three groups of four characters, like ABCD-EFGH-JKLM".into(),
        ));
    }
    let grants = invitation.permissions.granted();
    if grants.is_empty() {
        return Err(ApiError::BadRequest(
            "permissions: at least one of view, upload, note".into(),
        ));
    }
    if grants.contains(&"custodian") {
        return Err(ApiError::Refused("a patient cannot grant custodian".into()));
    }
    let clinic = state
        .store
        .clinics
        .find_one(doc! { "shareCodes": &code })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no clinic has share code {code}")))?;
    let clinic_id = clinic
        .get_object_id("_id")
        .map_err(|e| ApiError::Internal(e.into()))?;
    let profile = patients::invited_profile(&invitation.full_name, &invitation.birth_date)?;
    if state
        .store
        .patients
        .find_one(doc! { "clinicId": clinic_id, "userId": &user })
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict(
            "the user is a patient of this clinic already".into(),
        ));
    }
    let now = DateTime::now();
    let key = uuid::Uuid::new_v4().simple().to_string();
    let mut invite = doc! {
        "_id": &key, "key": &key, "type": "careteam_invitation", "status": "pending",
        "clinicId": clinic_id, "creatorId": &user, "pendingFor": &user,
        "permissions": patients::grants_document(&grants), "profile": profile,
        "created": now, "modified": now,
    };
    if let Some(address) = &caller.email {
        invite.insert("email", address.to_lowercase());
    }
    state
        .store
        .patient_invites
        .insert_one(&invite)
        .await
        .map_err(taken(
            "an invite of this clinic by this user is pending already",
        ))?;
    Ok(Json(Confirmation::from(&invite)))
}

/// `GET /v1/clinics/{clinicId}/invites/patients`: members and services; the pending invites.
#[utoipa::path(
    get,
    path = "/v1/clinics/{clinicId}/invites/patients",
    operation_id = "GetPatientInvites",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    responses((status = 200, description = "confirmations.v1", body = Vec<Confirmation>), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic_id): Path<String>,
) -> ApiResult<Json<Vec<Confirmation>>> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    require_clinic(&state.store, &caller, clinic_id, Need::Read).await?;
    let pending: Vec<Document> = state
        .store
        .patient_invites
        .find(doc! { "clinicId": clinic_id, "status": "pending" })
        .sort(doc! { "created": 1, "_id": 1 })
        .await?
        .try_collect()
        .await?;
    Ok(Json(pending.iter().map(Confirmation::from).collect()))
}

async fn pending(state: &AppState, clinic: bson::oid::ObjectId, key: &str) -> ApiResult<Document> {
    state
        .store
        .patient_invites
        .find_one(doc! { "_id": key, "clinicId": clinic, "status": "pending" })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no pending invite {key} for this clinic")))
}

/// Marks an invite answered: `status`, and it no longer blocks a new one.
async fn answer(state: &AppState, key: &str, status: &str) -> ApiResult<bool> {
    let result = state
        .store
        .patient_invites
        .update_one(
            doc! { "_id": key, "status": "pending" },
            doc! { "$set": { "status": status, "modified": DateTime::now() }, "$unset": { "pendingFor": "" } },
        )
        .await?;
    Ok(result.modified_count == 1)
}

/// `PUT /v1/clinics/{clinicId}/invites/patients/{inviteId}`: members and services accept; the
/// patient is created with the permissions offered and the invited profile, completed or
/// corrected by the body (`AcceptPatientInvitation`, optional); answers the patient.
#[utoipa::path(
    put,
    path = "/v1/clinics/{clinicId}/invites/patients/{inviteId}",
    operation_id = "AcceptPatientInvitation",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("inviteId" = String, Path)),
    request_body(content = AcceptedInvitation, description = "AcceptPatientInvitation"),
    responses((status = 200, description = "patient.v1", body = Patient), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 409, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn accept(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic_id, key)): Path<(String, String)>,
    body: Option<JsonBody<AcceptedInvitation>>,
) -> ApiResult<Json<Patient>> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    require(&state.store, &caller, clinic_id, Need::Read).await?;
    let invite = pending(&state, clinic_id, &key).await?;
    let clinic = clinics::find(&state, clinic_id).await?;
    let corrections = match body {
        Some(JsonBody(accepted)) => accepted.to_set(&clinic)?,
        None => Document::new(),
    };
    let user = invite
        .get_str("creatorId")
        .map_err(|e| ApiError::Internal(e.into()))?
        .to_owned();
    let grants = invite
        .get_document("permissions")
        .cloned()
        .unwrap_or_default();
    let now = DateTime::now();
    let mut patient = invite.get_document("profile").cloned().unwrap_or_default();
    patient.extend(corrections);
    let id = bson::Bson::ObjectId(bson::oid::ObjectId::new());
    // The clinic's MRN rules, as for any patient it adds (a required MRN the invite lacks is
    // given in the acceptance's body).
    limits::check_mrn(&state, &clinic, &id, patient.get_str("mrn").ok()).await?;
    patient.extend(doc! {
        "_id": id, "clinicId": clinic_id, "userId": &user,
        "permissions": grants, "invitedBy": &caller.user_id, "createdTime": now, "updatedTime": now,
    });
    // The patient first: if that fails (already a patient, or the clinic is being deleted),
    // the invite stays pending.
    patients::insert(&state, &patient, clinic_id).await?;
    if !answer(&state, &key, "completed").await? {
        return Err(ApiError::Conflict(
            "the invite was answered meanwhile".into(),
        ));
    }
    Ok(Json(Patient::from(&patient)))
}

/// `DELETE /v1/clinics/{clinicId}/invites/patients/{inviteId}`: members and services decline.
#[utoipa::path(
    delete,
    path = "/v1/clinics/{clinicId}/invites/patients/{inviteId}",
    operation_id = "DeclinePatientInvitation",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("inviteId" = String, Path)),
    responses((status = 200, description = "confirmation.v1", body = Confirmation), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn decline(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic_id, key)): Path<(String, String)>,
) -> ApiResult<Json<Confirmation>> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    require(&state.store, &caller, clinic_id, Need::Read).await?;
    pending(&state, clinic_id, &key).await?;
    answer(&state, &key, "declined").await?;
    let declined = state
        .store
        .patient_invites
        .find_one(doc! { "_id": &key })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("invite {key}")))?;
    Ok(Json(Confirmation::from(&declined)))
}
