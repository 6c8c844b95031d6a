//! The patients' queries: one patient, a new one (never outliving its clinic), and a page of
//! a clinic's patients with its counts.

use bson::oid::ObjectId;
use bson::{Document, doc};
use futures::TryStreamExt as _;
use mongodb::options::FindOptions;

use crate::api::error::{ApiError, ApiResult};
use crate::api::{AppState, clinics};

/// The patient `user` of `clinic`, or 404.
///
/// # Errors
/// 404; database failures.
pub async fn find(state: &AppState, clinic: ObjectId, user: &str) -> ApiResult<Document> {
    state
        .store
        .patients
        .find_one(doc! { "clinicId": clinic, "userId": user })
        .await?
        .ok_or_else(|| gone(clinic, user))
}

/// 404 for a patient that is not there (or that a racing request removed first).
pub fn gone(clinic: ObjectId, user: &str) -> ApiError {
    ApiError::NotFound(format!(
        "patient {user} not found in clinic {}",
        clinic.to_hex()
    ))
}

/// Inserts a new patient of `clinic` (taken back, 404, if the clinic is being deleted).
pub async fn insert(state: &AppState, patient: &Document, clinic: ObjectId) -> ApiResult<()> {
    let taken = "the clinic already has this patient";
    clinics::insert_member(state, &state.store.patients, patient, clinic, taken).await
}

/// A page of `clinic`'s patients matching `filter` in `sort` order, with the number matching
/// and the clinic's total.
///
/// The page and the total are read at once; the matches are counted only when neither gives
/// them (the filter narrows the clinic's patients, and the page is full or past the end).
///
/// # Errors
/// Database failures.
pub async fn page(
    state: &AppState,
    clinic: ObjectId,
    filter: Document,
    sort: Document,
    offset: u64,
    limit: i64,
) -> ApiResult<(Vec<Document>, u64, u64)> {
    let patients = &state.store.patients;
    let options = FindOptions::builder()
        .sort(sort)
        .skip(offset)
        .limit(limit)
        .build();
    let narrowed = filter.len() > 1;
    let page = async {
        let found = patients.find(filter.clone()).with_options(options).await?;
        found.try_collect::<Vec<Document>>().await
    };
    let total = patients
        .count_documents(doc! { "clinicId": clinic })
        .into_future();
    let (page, total) = tokio::try_join!(page, total)?;
    let len = page.len() as u64;
    let short_page = len < limit.unsigned_abs() && (len > 0 || offset == 0);
    let count = match (narrowed, short_page) {
        (false, _) => total,
        (true, true) => offset + len,
        (true, false) => patients.count_documents(filter).await?,
    };
    Ok((page, count, total))
}
