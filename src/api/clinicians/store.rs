//! The clinicians' queries: one clinician, and the clinic's `admins` kept equal to its
//! CLINIC_ADMIN clinicians.

use bson::oid::ObjectId;
use bson::{Document, doc};
use futures::TryStreamExt as _;

use super::ADMIN;
use crate::api::AppState;
use crate::api::error::{ApiError, ApiResult};

/// The clinician `user` of `clinic`, or 404.
///
/// # Errors
/// 404; database failures.
pub async fn find(state: &AppState, clinic: ObjectId, user: &str) -> ApiResult<Document> {
    state
        .store
        .clinicians
        .find_one(doc! { "clinicId": clinic, "userId": user })
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "clinician {user} not found in clinic {}",
                clinic.to_hex()
            ))
        })
}

/// Sets the clinic's `admins` to its CLINIC_ADMIN clinicians; how many there are.
///
/// Concurrent changes each compute the list at a different moment and the last write wins, so a
/// stale list could stay: the list is written, read again, and written again until what is read
/// is what was written (the last writer always leaves the current list).
///
/// # Errors
/// Database failures.
pub async fn sync_admins(state: &AppState, clinic: ObjectId) -> ApiResult<usize> {
    let mut written: Option<Vec<String>> = None;
    for _ in 0..5 {
        let ids = admin_ids(state, clinic).await?;
        if written.as_ref().is_some_and(|w| same_members(w, &ids)) {
            break;
        }
        state
            .store
            .clinics
            .update_one(doc! { "_id": clinic }, doc! { "$set": { "admins": &ids } })
            .await?;
        written = Some(ids);
    }
    Ok(written.map_or(0, |w| w.len()))
}

/// The user ids of the clinic's CLINIC_ADMIN clinicians, in stored order (`admins[0]` is the
/// creator, as in the reference service).
async fn admin_ids(state: &AppState, clinic: ObjectId) -> ApiResult<Vec<String>> {
    let admins: Vec<Document> = state
        .store
        .clinicians
        .find(doc! { "clinicId": clinic, "roles": ADMIN, "userId": { "$exists": true } })
        .await?
        .try_collect()
        .await?;
    Ok(admins
        .iter()
        .filter_map(|a| a.get_str("userId").ok().map(str::to_owned))
        .collect())
}

fn same_members(a: &[String], b: &[String]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    a == b
}
