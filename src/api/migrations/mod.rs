//! Migrations of legacy clinician accounts into a clinic: the admin triggers the initial one,
//! services add more and move their status forward (PENDING → RUNNING → COMPLETED; the
//! migrations processor does), members read them. One migration per legacy user (unique index).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use futures::TryStreamExt as _;

use super::access::{Need, require, require_clinic, require_service, require_while};
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody, taken};
use super::extract::{JsonBody, Path, known_clinic_id, object_id, user_id};
use super::validate::{bad, one_of};
use super::{AppState, clinics};

mod model;
pub use model::{FAILED, Migration, NewMigration, STATUSES, StatusUpdate, Trigger};

const TAKEN: &str = "this user has a migration already";

/// `POST /v1/clinicians/{userId}/migrate`: a legacy clinician account gets an empty clinic
/// (no name, not migrated) with the user as its only admin; its patients move once the admin
/// has named the clinic and triggers the initial migration. The user themselves or a service.
///
/// There is no identity service here to read the admin's address from: the user's own token
/// carries it (`email` claim); for a service caller it is taken from the user's clinician or
/// patient records, and the call is refused (400) when there is none. A repeat answers the
/// empty clinic the first call made instead of making another.
#[utoipa::path(
    post,
    path = "/v1/clinicians/{userId}/migrate",
    operation_id = "EnableNewClinicExperience",
    tag = "Clinics",
    params(("userId" = String, Path)),
    responses((status = 200, description = "clinic.v1", body = clinics::Clinic), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
) -> ApiResult<Json<clinics::Clinic>> {
    let user = user_id("userId", &user)?;
    if !caller.service && caller.user_id != user {
        return Err(ApiError::Forbidden);
    }
    let empty = doc! { "admins": &user, "isMigrated": false, "name": { "$exists": false } };
    if let Some(found) = state.store.clinics.find_one(empty).await? {
        return Ok(Json(clinics::Clinic::from(&found)));
    }
    let (email, name) = if caller.service {
        (address_of(&state, &user).await?, None)
    } else {
        let email = caller.email.clone().ok_or_else(|| {
            ApiError::BadRequest(
                "the token carries no email claim; the clinic's admin needs an address".into(),
            )
        })?;
        (email, caller.name.clone())
    };
    let clinic =
        clinics::create_with_admin(&state, Document::new(), &user, &email, name.as_deref()).await?;
    Ok(Json(clinics::Clinic::from(&clinic)))
}

/// The address a user's clinician or patient records hold, for a service enabling the user's
/// clinic.
async fn address_of(state: &AppState, user: &str) -> ApiResult<String> {
    for collection in [&state.store.clinicians, &state.store.patients] {
        let filter = doc! { "userId": user, "email": { "$type": "string", "$ne": "" } };
        if let Some(record) = collection.find_one(filter).await?
            && let Ok(email) = record.get_str("email")
        {
            return Ok(email.to_owned());
        }
    }
    Err(ApiError::BadRequest(format!(
        "no address is known for user {user}: with no identity service here, the user enables \
         their clinic themselves (a token with an email claim)"
    )))
}

/// `POST /v1/clinics/{clinicId}/migrate`: the clinic's only admin migrates their legacy
/// account: the clinic becomes migrated and a PENDING migration of the admin is inserted. A
/// clinic without a name (one EnableNewClinicExperience made) is refused until it has one.
#[utoipa::path(
    post,
    path = "/v1/clinics/{clinicId}/migrate",
    operation_id = "TriggerInitialMigration",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    request_body(content = Trigger, description = "triggerMigration.v1"),
    responses((status = 200, description = "migration.v1", body = Migration), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 409, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn trigger(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic_id): Path<String>,
    JsonBody(trigger): JsonBody<Trigger>,
) -> ApiResult<Json<Migration>> {
    let clinic_id = known_clinic_id(&clinic_id)?;
    let found = clinics::find(&state, clinic_id).await?;
    if caller.service {
        return Err(ApiError::Forbidden);
    }
    require(&state.store, &caller, clinic_id, Need::Write).await?;
    if found.get_bool("isMigrated").unwrap_or(false) {
        return Err(ApiError::Conflict("the clinic is migrated already".into()));
    }
    if found.get_str("name").is_err() {
        return Err(ApiError::Conflict(
            "the clinic has no name yet: its admin completes its details first (UpdateClinic)"
                .into(),
        ));
    }
    let admins = found.get_array("admins").map(Vec::len).unwrap_or(0);
    if admins != 1 {
        return Err(ApiError::Conflict(format!(
            "the initial migration needs exactly one admin; the clinic has {admins}"
        )));
    }
    let now = DateTime::now();
    let mut migration = doc! {
        "_id": ObjectId::new(), "clinicId": clinic_id, "userId": &caller.user_id, "status": "PENDING",
        "createdTime": now, "updatedTime": now,
    };
    if trigger.attestation_submitted == Some(true) {
        migration.insert("attestationTime", now);
    }
    // No transaction: the migration first (it may be refused), then the clinic's flag; the
    // migration is taken back if the flag cannot be set.
    state
        .store
        .migrations
        .insert_one(&migration)
        .await
        .map_err(taken(TAKEN))?;
    let flagged = state
        .store
        .clinics
        .update_one(
            doc! { "_id": clinic_id, "isMigrated": { "$ne": true } },
            doc! { "$set": { "isMigrated": true, "updatedTime": now } },
        )
        .await;
    match flagged {
        Ok(result) if result.modified_count == 1 => Ok(Json(Migration::from(&migration))),
        other => {
            state.store.migrations.delete_one(doc! { "_id": migration.get_object_id("_id").map_err(|e| ApiError::Internal(e.into()))? }).await?;
            match other {
                Ok(_) => Err(ApiError::Conflict("the clinic is migrated already".into())),
                Err(error) => Err(error.into()),
            }
        }
    }
}

/// `POST /v1/clinics/{clinicId}/migrations`: services add the migration of another legacy
/// clinician to a migrated clinic; 202.
#[utoipa::path(
    post,
    path = "/v1/clinics/{clinicId}/migrations",
    operation_id = "MigrateLegacyClinicianPatients",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    request_body(content = NewMigration, description = "migration.v1"),
    responses((status = 202, description = "migration.v1", body = Migration), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 409, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic_id): Path<String>,
    JsonBody(input): JsonBody<NewMigration>,
) -> ApiResult<(StatusCode, Json<Migration>)> {
    let clinic_id = known_clinic_id(&clinic_id)?;
    require_service(&caller)?;
    let user = user_id(
        "userId",
        input
            .user_id
            .as_deref()
            .ok_or_else(|| bad("userId", "is required"))?,
    )?;
    let found = clinics::find(&state, clinic_id).await?;
    if !found.get_bool("isMigrated").unwrap_or(false) {
        return Err(ApiError::Conflict(
            "the clinic is not migrated yet; trigger its initial migration first".into(),
        ));
    }
    let now = DateTime::now();
    let migration = doc! {
        "_id": ObjectId::new(), "clinicId": clinic_id, "userId": &user, "status": "PENDING",
        "createdTime": now, "updatedTime": now,
    };
    state
        .store
        .migrations
        .insert_one(&migration)
        .await
        .map_err(taken(TAKEN))?;
    Ok((StatusCode::ACCEPTED, Json(Migration::from(&migration))))
}

/// `GET /v1/clinics/{clinicId}/migrations`: members and services.
#[utoipa::path(
    get,
    path = "/v1/clinics/{clinicId}/migrations",
    operation_id = "ListMigrations",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    responses((status = 200, description = "migrations.v1", body = Vec<Migration>), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic_id): Path<String>,
) -> ApiResult<Json<Vec<Migration>>> {
    let clinic_id = known_clinic_id(&clinic_id)?;
    require_clinic(&state.store, &caller, clinic_id, Need::Read).await?;
    let found: Vec<Document> = state
        .store
        .migrations
        .find(doc! { "clinicId": clinic_id })
        .sort(doc! { "createdTime": 1, "_id": 1 })
        .await?
        .try_collect()
        .await?;
    Ok(Json(found.iter().map(Migration::from).collect()))
}

async fn find(state: &AppState, clinic: ObjectId, user: &str) -> ApiResult<Document> {
    state
        .store
        .migrations
        .find_one(doc! { "clinicId": clinic, "userId": user })
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no migration of {user} in clinic {}",
                clinic.to_hex()
            ))
        })
}

/// `GET /v1/clinics/{clinicId}/migrations/{userId}`: members and services.
#[utoipa::path(
    get,
    path = "/v1/clinics/{clinicId}/migrations/{userId}",
    operation_id = "GetMigration",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("userId" = String, Path)),
    responses((status = 200, description = "migration.v1", body = Migration), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic_id, user)): Path<(String, String)>,
) -> ApiResult<Json<Migration>> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    let user = user_id("userId", &user)?;
    let read = find(&state, clinic_id, &user);
    let found = require_while(&state.store, &caller, clinic_id, Need::Read, read).await?;
    Ok(Json(Migration::from(&found)))
}

/// `PATCH /v1/clinics/{clinicId}/migrations/{userId}`: services move the status forward only
/// (the same status again changes nothing; backwards is 409, and so is any change of a FAILED
/// one). Without a body (the contract's
/// bodies are optional) nothing changes; a body must name the status.
#[utoipa::path(
    patch,
    path = "/v1/clinics/{clinicId}/migrations/{userId}",
    operation_id = "UpdateMigration",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("userId" = String, Path)),
    request_body(content = StatusUpdate, description = "migrationUpdate.v1"),
    responses((status = 200, description = "migration.v1", body = Migration), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 409, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic_id, user)): Path<(String, String)>,
    update: Option<JsonBody<StatusUpdate>>,
) -> ApiResult<Json<Migration>> {
    let clinic_id = object_id("clinicId", &clinic_id)?;
    let user = user_id("userId", &user)?;
    require_service(&caller)?;
    let Some(JsonBody(update)) = update else {
        return Ok(Json(Migration::from(
            &find(&state, clinic_id, &user).await?,
        )));
    };
    let status = one_of("status", &update.status, &STATUSES)?;
    let to = STATUSES.iter().position(|s| *s == status).unwrap_or(0);
    let current = find(&state, clinic_id, &user).await?;
    let from_status = current.get_str("status").unwrap_or("PENDING").to_owned();
    if from_status == FAILED {
        return Err(ApiError::Conflict(
            "the migration FAILED, which is final".into(),
        ));
    }
    let from = STATUSES.iter().position(|s| *s == from_status).unwrap_or(0);
    if to < from {
        return Err(ApiError::Conflict(format!(
            "a migration moves only forward: {from_status} cannot become {}",
            update.status
        )));
    }
    if to > from {
        let id = current
            .get_object_id("_id")
            .map_err(|e| ApiError::Internal(e.into()))?;
        // Conditional on the status read, so a concurrent change is not overwritten.
        let result = state
            .store
            .migrations
            .update_one(
                doc! { "_id": id, "status": &from_status },
                doc! { "$set": { "status": &update.status, "updatedTime": DateTime::now() } },
            )
            .await?;
        if result.matched_count == 0 {
            return Err(ApiError::Conflict(
                "the migration changed meanwhile; read it again".into(),
            ));
        }
    }
    Ok(Json(Migration::from(
        &find(&state, clinic_id, &user).await?,
    )))
}
