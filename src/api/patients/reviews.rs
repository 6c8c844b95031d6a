//! A patient's reviews (`patientReview.v1`, newest first, at most two, as Tidepool keeps them):
//! a member marks the patient's data reviewed now (UpdatePatientReviews) or takes back their own
//! latest review (DeletePatientReviews: 404 without one, 409 when the latest is another
//! clinician's).

use axum::Json;
use axum::extract::State;
use bson::{DateTime, Document, doc};

use super::model::Review;
use super::store::find;
use crate::api::AppState;
use crate::api::access::{Need, require};
use crate::api::auth::Caller;
use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::extract::{Path, object_id, user_id};
use crate::api::store::rewrite_list;

/// The most reviews a patient keeps.
const KEPT: usize = 2;

/// `PUT /v1/clinics/{clinicId}/patients/{patientId}/reviews`: members and services; the caller
/// reviewed the patient now.
#[utoipa::path(
    put,
    path = "/v1/clinics/{clinicId}/patients/{patientId}/reviews",
    operation_id = "UpdatePatientReviews",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("patientId" = String, Path)),
    responses((status = 200, description = "patientReviews.v1", body = Vec<Review>), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 409, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn review(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic, user)): Path<(String, String)>,
) -> ApiResult<Json<Vec<Review>>> {
    let (clinic, user) = (
        object_id("clinicId", &clinic)?,
        user_id("patientId", &user)?,
    );
    require(&state.store, &caller, clinic, Need::Read).await?;
    let reviewer = caller.user_id.clone();
    let now = DateTime::now();
    edit(&state, clinic, &user, |reviews| {
        reviews.insert(0, doc! { "clinicianId": &reviewer, "time": now });
        reviews.truncate(KEPT);
        Ok(())
    })
    .await
}

/// `DELETE /v1/clinics/{clinicId}/patients/{patientId}/reviews`: members and services take
/// back their own latest review.
#[utoipa::path(
    delete,
    path = "/v1/clinics/{clinicId}/patients/{patientId}/reviews",
    operation_id = "DeletePatientReviews",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("patientId" = String, Path)),
    responses((status = 200, description = "patientReviews.v1", body = Vec<Review>), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 409, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn revert(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic, user)): Path<(String, String)>,
) -> ApiResult<Json<Vec<Review>>> {
    let (clinic, user) = (
        object_id("clinicId", &clinic)?,
        user_id("patientId", &user)?,
    );
    require(&state.store, &caller, clinic, Need::Read).await?;
    edit(&state, clinic, &user, |reviews| {
        let latest = reviews
            .first()
            .ok_or_else(|| ApiError::NotFound("no review to delete".into()))?;
        if latest.get_str("clinicianId") != Ok(caller.user_id.as_str()) {
            return Err(ApiError::Conflict(
                "the latest review is another clinician's".into(),
            ));
        }
        reviews.remove(0);
        Ok(())
    })
    .await
}

/// Changes the patient's reviews with `change` ([`rewrite_list`], read again and retried when
/// they changed meanwhile); the reviews as written.
async fn edit(
    state: &AppState,
    clinic: bson::oid::ObjectId,
    user: &str,
    mut change: impl FnMut(&mut Vec<Document>) -> ApiResult<()>,
) -> ApiResult<Json<Vec<Review>>> {
    for _ in 0..10 {
        let mut patient = find(state, clinic, user).await?;
        let patients = &state.store.patients;
        if let Some(((), reviews)) =
            rewrite_list(patients, &patient, "reviews", true, &mut change).await?
        {
            patient.insert("reviews", reviews);
            return Ok(Json(Review::all_of(&patient)));
        }
    }
    Err(ApiError::Conflict(
        "the patient's reviews kept changing meanwhile; try again".into(),
    ))
}
