//! A patient's reviews (`patientReview.v1`, newest first, at most two, as Tidepool keeps them):
//! a member marks the patient's data reviewed now (UpdatePatientReviews) or takes back their own
//! latest review (DeletePatientReviews: 404 without one, 409 when the latest is another
//! clinician's).

use axum::Json;
use axum::extract::State;
use bson::{Bson, DateTime, Document, doc};

use super::model::Review;
use super::store::find;
use crate::api::AppState;
use crate::api::access::{Need, require};
use crate::api::auth::Caller;
use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::extract::{Path, object_id, user_id};

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

/// Changes the patient's reviews with `change`, on condition they did not change meanwhile
/// (read again and retried otherwise); the reviews as written.
async fn edit(
    state: &AppState,
    clinic: bson::oid::ObjectId,
    user: &str,
    mut change: impl FnMut(&mut Vec<Document>) -> ApiResult<()>,
) -> ApiResult<Json<Vec<Review>>> {
    for _ in 0..10 {
        let patient = find(state, clinic, user).await?;
        let stored = patient.get("reviews").cloned();
        let mut reviews: Vec<Document> = patient
            .get_array("reviews")
            .map(|r| r.iter().filter_map(Bson::as_document).cloned().collect())
            .unwrap_or_default();
        change(&mut reviews)?;
        let id = patient.get("_id").cloned().unwrap_or(Bson::Null);
        let unchanged = match stored {
            Some(stored) => doc! { "_id": &id, "reviews": stored },
            None => doc! { "_id": &id, "reviews": { "$exists": false } },
        };
        let written = state
            .store
            .patients
            .update_one(
                unchanged,
                doc! { "$set": { "reviews": &reviews, "updatedTime": DateTime::now() } },
            )
            .await?;
        if written.matched_count == 1 {
            let mut answered = patient;
            answered.insert("reviews", reviews);
            return Ok(Json(Review::all_of(&answered)));
        }
    }
    Err(ApiError::Conflict(
        "the patient's reviews kept changing meanwhile; try again".into(),
    ))
}
