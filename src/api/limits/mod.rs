//! A clinic's MRN rules and patient limit, and its patient count: Get/UpdateMRNSettings,
//! Get/UpdatePatientCountSettings, GetPatientCount (members read, services change), and the
//! checks the patient operations run with them ([`check_mrn`], [`check_limit`]).
//!
//! - MRN settings (`{required, unique}`): with `required`, a patient created or updated without
//!   an MRN is refused (400, naming `mrn`); with `unique`, an MRN another patient of the clinic
//!   has is refused (409). FerretDB has no partial unique indexes, so uniqueness is checked
//!   before the write: two requests racing with one MRN can both pass.
//! - Patient limit: a clinic's `patientCountSettings.hardLimit` (`plan`, optional start and end
//!   dates) stops CreatePatientAccount with 402 once the clinic has that many patients counted
//!   towards its plan (all but twiist's), for clinics in the US (no country, or `US`) on the
//!   default tier, as Tidepool's; other clinics are unlimited. New clinics start with Tidepool's
//!   hard limit of 250. Services adding existing users (CreatePatientFromUser: invites accepted,
//!   migrations) are not limited, as in Tidepool.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, doc};
use futures::TryStreamExt as _;

use super::access::{Need, require_clinic, require_service};
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{JsonBody, Path, object_id};
use super::validate::bad;
use super::{AppState, clinics};

mod model;
pub use model::{
    MrnSettings, NEW_CLINIC_HARD_LIMIT, PatientCount, PatientCountLimit, PatientCountSettings,
    ProviderCount,
};

/// The provider whose patients do not count towards a plan (Tidepool's rule).
const UNCOUNTED_PROVIDER: &str = "twiist";

/// `GET /v1/clinics/{clinicId}/settings/mrn`: members and services.
#[utoipa::path(
    get,
    path = "/v1/clinics/{clinicId}/settings/mrn",
    operation_id = "GetMRNSettings",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    responses((status = 200, description = "mrnSettings.v1", body = MrnSettings), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn get_mrn(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic): Path<String>,
) -> ApiResult<Json<MrnSettings>> {
    let clinic = readable(&state, &caller, &clinic).await?;
    Ok(Json(MrnSettings::of(&clinic)))
}

/// `PUT /v1/clinics/{clinicId}/settings/mrn`: services.
#[utoipa::path(
    put,
    path = "/v1/clinics/{clinicId}/settings/mrn",
    operation_id = "UpdateMRNSettings",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    request_body(content = MrnSettings, description = "mrnSettings.v1"),
    responses((status = 200, description = "no body"), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn update_mrn(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic): Path<String>,
    JsonBody(settings): JsonBody<MrnSettings>,
) -> ApiResult<StatusCode> {
    let clinic = object_id("clinicId", &clinic)?;
    require_service(&caller)?;
    set(&state, clinic, "mrnSettings", settings.to_document()).await
}

/// `GET /v1/clinics/{clinicId}/settings/patient_count`: members and services.
#[utoipa::path(
    get,
    path = "/v1/clinics/{clinicId}/settings/patient_count",
    operation_id = "GetPatientCountSettings",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    responses((status = 200, description = "patientCountSettings.v1", body = PatientCountSettings), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn get_count_settings(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic): Path<String>,
) -> ApiResult<Json<PatientCountSettings>> {
    let clinic = readable(&state, &caller, &clinic).await?;
    Ok(Json(PatientCountSettings::of(&clinic)))
}

/// `PUT /v1/clinics/{clinicId}/settings/patient_count`: services; replaces both limits (one
/// left out is removed).
#[utoipa::path(
    put,
    path = "/v1/clinics/{clinicId}/settings/patient_count",
    operation_id = "UpdatePatientCountSettings",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    request_body(content = PatientCountSettings, description = "patientCountSettings.v1"),
    responses((status = 200, description = "no body"), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn update_count_settings(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic): Path<String>,
    JsonBody(settings): JsonBody<PatientCountSettings>,
) -> ApiResult<StatusCode> {
    let clinic = object_id("clinicId", &clinic)?;
    let stored = settings.to_document()?;
    require_service(&caller)?;
    set(&state, clinic, "patientCountSettings", stored).await
}

/// `GET /v1/clinics/{clinicId}/patient_count`: members and services; counted on each read.
#[utoipa::path(
    get,
    path = "/v1/clinics/{clinicId}/patient_count",
    operation_id = "GetPatientCount",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    responses((status = 200, description = "patientCount.v1", body = PatientCount), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn count(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic): Path<String>,
) -> ApiResult<Json<PatientCount>> {
    let clinic = object_id("clinicId", &clinic)?;
    require_clinic(&state.store, &caller, clinic, Need::Read).await?;
    let options = mongodb::options::FindOptions::builder()
        .projection(doc! { "dataSources": 1 })
        .build();
    let patients: Vec<Document> = state
        .store
        .patients
        .find(doc! { "clinicId": clinic })
        .with_options(options)
        .await?
        .try_collect()
        .await?;
    let mut count = PatientCount {
        total: patients.len() as u64,
        ..PatientCount::default()
    };
    for patient in &patients {
        let sources: Vec<&Document> = patient
            .get_array("dataSources")
            .map(|s| s.iter().filter_map(Bson::as_document).collect())
            .unwrap_or_default();
        let mut providers: Vec<&str> = Vec::new();
        for source in &sources {
            let Ok(provider) = source.get_str("providerName") else {
                continue;
            };
            let entry = count.providers.entry(provider.to_owned()).or_default();
            if !providers.contains(&provider) {
                providers.push(provider);
                entry.total += 1;
            }
            if let Ok(state) = source.get_str("state") {
                *entry.states.entry(state.to_owned()).or_default() += 1;
            }
        }
        if !providers.contains(&UNCOUNTED_PROVIDER) {
            count.plan += 1;
        }
    }
    Ok(Json(count))
}

/// The clinic, for a member or a service to read.
async fn readable(state: &AppState, caller: &Caller, clinic: &str) -> ApiResult<Document> {
    let clinic = object_id("clinicId", clinic)?;
    require_clinic(&state.store, caller, clinic, Need::Read).await?;
    clinics::find(state, clinic).await
}

/// Sets one settings field of the clinic; 404 when there is no such clinic.
async fn set(
    state: &AppState,
    clinic: ObjectId,
    field: &str,
    value: Document,
) -> ApiResult<StatusCode> {
    let updated = state
        .store
        .clinics
        .update_one(
            doc! { "_id": clinic },
            doc! { "$set": { field: value, "updatedTime": DateTime::now() } },
        )
        .await?;
    if updated.matched_count == 0 {
        return Err(ApiError::NotFound(format!(
            "clinic {} not found",
            clinic.to_hex()
        )));
    }
    Ok(StatusCode::OK)
}

/// The MRN rules of `clinic` for the patient `id` about to have the MRN `mrn` (`None`: none):
/// required, and unique among the clinic's other patients when the settings say so.
///
/// # Errors
/// 400 naming `mrn` when it is required and missing; 409 when another patient has it.
pub async fn check_mrn(
    state: &AppState,
    clinic: &Document,
    id: &Bson,
    mrn: Option<&str>,
) -> ApiResult<()> {
    let settings = MrnSettings::of(clinic);
    let Some(mrn) = mrn.filter(|m| !m.is_empty()) else {
        if settings.required {
            return Err(bad("mrn", "is required by the clinic's MRN settings"));
        }
        return Ok(());
    };
    if settings.unique {
        let clinic_id = clinic.get("_id").cloned().unwrap_or(Bson::Null);
        let other = state
            .store
            .patients
            .find_one(doc! { "clinicId": clinic_id, "mrn": mrn, "_id": { "$ne": id } })
            .await?;
        if other.is_some() {
            return Err(ApiError::Conflict(
                "another patient of the clinic has this mrn".into(),
            ));
        }
    }
    Ok(())
}

/// The patient limit of `clinic` before one more patient: 402 once its hard limit is reached
/// (US clinics on the default tier only, as Tidepool's).
///
/// # Errors
/// 402; database failures.
pub async fn check_limit(state: &AppState, clinic: &Document) -> ApiResult<()> {
    let country = clinic.get_str("country").unwrap_or_default().trim();
    let tier = clinic.get_str("tier").unwrap_or_default();
    let limited = (country.is_empty() || country.eq_ignore_ascii_case("US"))
        && (tier.is_empty() || tier == "tier0100");
    let Some(limit) = PatientCountSettings::of(clinic).hard_limit else {
        return Ok(());
    };
    if !limited || !limit.applies_at(DateTime::now()) {
        return Ok(());
    }
    let clinic_id = clinic.get("_id").cloned().unwrap_or(Bson::Null);
    // All, less the uncounted: two positive matches (FerretDB does not apply `$ne` to each
    // element of an array of documents).
    let patients = &state.store.patients;
    let (all, uncounted) = tokio::try_join!(
        patients
            .count_documents(doc! { "clinicId": &clinic_id })
            .into_future(),
        patients
            .count_documents(
                doc! { "clinicId": &clinic_id, "dataSources.providerName": UNCOUNTED_PROVIDER }
            )
            .into_future(),
    )?;
    let counted = all.saturating_sub(uncounted);
    if i64::try_from(counted).unwrap_or(i64::MAX) >= limit.plan {
        return Err(ApiError::PaymentRequired(format!(
            "the clinic reached its limit of {} patients",
            limit.plan
        )));
    }
    Ok(())
}
