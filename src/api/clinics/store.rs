//! The clinics' queries: a page of clinics, a new clinic with its admin, a clinic's deletion
//! (marked, then archived and deleted with its clinicians), and what other resources need of a
//! clinic (it exists, it takes new members, the clinics of a user's records).

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use futures::TryStreamExt as _;
use mongodb::options::FindOptions;

use crate::api::AppState;
use crate::api::error::{ApiError, ApiResult, is_duplicate_key, taken};
use crate::api::share_code;
use crate::api::store::rewrite_list;

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
/// step. `conflict` words a unique-index conflict.
///
/// # Errors
/// 404 as above; 409 worded `conflict`; database failures.
pub async fn insert_member(
    state: &AppState,
    collection: &mongodb::Collection<Document>,
    member: &Document,
    clinic: ObjectId,
    conflict: &str,
) -> ApiResult<()> {
    collection
        .insert_one(member)
        .await
        .map_err(taken(conflict))?;
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

/// Changes the clinic's list `field` (its patient tags, its sites) with `edit`, which sees the
/// list as stored and answers what the caller gets ([`rewrite_list`]); `edit` runs again on a
/// newer list when another change came first, so two concurrent edits both land.
///
/// # Errors
/// 404 without the clinic; `edit`'s; 409 after repeated interference; database failures.
pub async fn edit_list<T>(
    state: &AppState,
    id: ObjectId,
    field: &str,
    mut edit: impl FnMut(&mut Vec<Document>) -> ApiResult<T>,
) -> ApiResult<T> {
    for _ in 0..10 {
        let clinic = find(state, id).await?;
        let clinics = &state.store.clinics;
        if let Some((answer, _)) = rewrite_list(clinics, &clinic, field, true, &mut edit).await? {
            return Ok(answer);
        }
    }
    Err(ApiError::Conflict(format!(
        "the clinic's {field} kept changing meanwhile; try again"
    )))
}

/// The clinics matching `filter`, oldest first.
///
/// # Errors
/// Database failures.
pub async fn page(
    state: &AppState,
    filter: Document,
    offset: u64,
    limit: i64,
) -> ApiResult<Vec<Document>> {
    let options = FindOptions::builder()
        .sort(doc! { "createdTime": 1, "_id": 1 })
        .skip(offset)
        .limit(limit)
        .build();
    let found = state
        .store
        .clinics
        .find(filter)
        .with_options(options)
        .await?;
    Ok(found.try_collect().await?)
}

/// Creates a clinic from `fields` (what its creator sent) with `admin` (user id, address, name)
/// as its CLINIC_ADMIN, and answers the stored document: defaults for a new clinic (not migrated,
/// `tier0100`, the new clinic's patient limit, mg/dL), a fresh share code, the admin's clinician
/// record.
///
/// # Errors
/// Database failures.
pub async fn create(
    state: &AppState,
    mut clinic: Document,
    admin: &str,
    email: &str,
    name: Option<&str>,
) -> ApiResult<Document> {
    let now = DateTime::now();
    let id = ObjectId::new();
    clinic.insert("_id", id);
    clinic.insert("admins", vec![admin]);
    clinic.insert("isMigrated", false);
    clinic.insert("tier", "tier0100");
    clinic.insert(
        "patientCountSettings",
        crate::api::limits::PatientCountSettings::new_clinic(),
    );
    if !clinic.contains_key("PreferredBgUnits") {
        clinic.insert("PreferredBgUnits", "mg/dL");
    }
    clinic.insert("createdTime", now);
    clinic.insert("updatedTime", now);
    let mut clinician = doc! {
        "clinicId": id, "userId": admin, "email": email.to_lowercase(),
        "roles": ["CLINIC_ADMIN"], "createdTime": now, "updatedTime": now,
    };
    if let Some(name) = name {
        clinician.insert("name", name);
    }
    insert(state, &mut clinic, clinician).await?;
    Ok(clinic)
}

/// Inserts the new `clinic` with a fresh share code, then its `admin` clinician; the clinic is
/// removed again if the admin cannot be written (no transactions on FerretDB).
async fn insert(state: &AppState, clinic: &mut Document, admin: Document) -> ApiResult<()> {
    // A collision with an existing code is astronomically rare but possible: draw again.
    let mut attempts = 0;
    loop {
        let code = share_code::generate();
        clinic.insert("canonicalShareCode", &code);
        clinic.insert("shareCodes", vec![code]);
        match state.store.clinics.insert_one(&*clinic).await {
            Ok(_) => break,
            Err(error) if is_duplicate_key(&error) && attempts < 100 => attempts += 1,
            Err(error) => return Err(error.into()),
        }
    }
    if let Err(error) = state.store.clinicians.insert_one(admin).await {
        let id = clinic.get("_id").cloned().unwrap_or(bson::Bson::Null);
        let _ = state.store.clinics.delete_one(doc! { "_id": id }).await;
        return Err(error.into());
    }
    Ok(())
}

/// Deletes `clinic` (as read) and its clinicians, each archived first with `by`, the user
/// deleting it; refused (409) while it has patients.
///
/// The clinic is marked before its patients are counted: a patient or clinician added after the
/// count sees the mark and takes itself back ([`insert_member`]), so none outlives the clinic.
/// FerretDB has no transactions to do this in one step.
///
/// # Errors
/// 409 with patients; database failures.
pub async fn delete(state: &AppState, clinic: &Document, by: &str) -> ApiResult<()> {
    let id = clinic
        .get_object_id("_id")
        .map_err(|e| ApiError::Internal(e.into()))?;
    let now = DateTime::now();
    let store = &state.store;
    store
        .clinics
        .update_one(doc! { "_id": id }, doc! { "$set": { DELETING: now } })
        .await?;
    let patients = store
        .patients
        .count_documents(doc! { "clinicId": id })
        .await?;
    if patients > 0 {
        store
            .clinics
            .update_one(doc! { "_id": id }, doc! { "$unset": { DELETING: "" } })
            .await?;
        return Err(ApiError::Conflict(format!(
            "the clinic has {patients} patient(s); remove them first"
        )));
    }
    let clinicians: Vec<Document> = store
        .clinicians
        .find(doc! { "clinicId": id })
        .await?
        .try_collect()
        .await?;
    for clinician in &clinicians {
        store
            .clinician_deletions
            .insert_one(doc! { "deletedTime": now, "deletedByUserId": by, "clinician": clinician })
            .await?;
    }
    store
        .clinic_deletions
        .insert_one(doc! { "deletedTime": now, "deletedByUserId": by, "clinic": clinic })
        .await?;
    store
        .clinicians
        .delete_many(doc! { "clinicId": id })
        .await?;
    store.clinics.delete_one(doc! { "_id": id }).await?;
    Ok(())
}
