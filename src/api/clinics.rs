//! Clinics: list (services), create (the caller becomes CLINIC_ADMIN), get, get by share code,
//! update (admins, services; PUT never nulls omitted fields), delete (admins; only without
//! patients, archived to `clinic_deletions` first).

use std::collections::HashSet;
use std::sync::LazyLock;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, doc};
use futures::TryStreamExt as _;
use mongodb::options::FindOptions;
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::{Need, require, require_service};
use super::auth::Caller;
use super::error::{ApiError, ApiResult, is_duplicate_key};
use super::extract::{JsonBody, Params, object_id};
use super::{AppState, share_code, time};

/// The writable fields of `clinic.v1` (read-only ones a client echoes back are ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClinicInput {
    name: Option<String>,
    address: Option<String>,
    city: Option<String>,
    state: Option<String>,
    postal_code: Option<String>,
    country: Option<String>,
    website: Option<String>,
    clinic_type: Option<String>,
    clinic_size: Option<String>,
    phone_numbers: Option<Vec<PhoneNumber>>,
    preferred_bg_units: Option<String>,
    timezone: Option<String>,
    suppressed_notifications: Option<SuppressedNotifications>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct PhoneNumber {
    #[serde(rename = "type")]
    kind: Option<String>,
    number: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SuppressedNotifications {
    patient_clinic_invitation: Option<bool>,
}

const CLINIC_TYPES: [&str; 5] = [
    "provider_practice",
    "healthcare_system",
    "veterinary_clinic",
    "other",
    "researcher",
];
const CLINIC_SIZES: [&str; 4] = ["0-249", "250-499", "500-999", "1000+"];
const BG_UNITS: [&str; 2] = ["mg/dL", "mmol/L"];

/// The time zone names the contract allows (`clinicTimezone.v1`): a stored name outside them
/// would break every later read of the clinic against the contract. A zone database crate would
/// accept names the contract lacks, so the list is the contract's own.
pub static TIMEZONES: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("timezones.txt")
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .collect()
});

fn bad(field: &str, why: &str) -> ApiError {
    ApiError::BadRequest(format!("{field}: {why}"))
}

impl ClinicInput {
    /// The fields to `$set`, validated; only what the client sent.
    fn to_set(&self) -> ApiResult<Document> {
        let mut set = Document::new();
        let texts = [
            ("name", &self.name),
            ("address", &self.address),
            ("city", &self.city),
            ("state", &self.state),
            ("postalCode", &self.postal_code),
            ("country", &self.country),
        ];
        for (field, value) in texts {
            if let Some(value) = value {
                if value.trim().is_empty() {
                    return Err(bad(field, "must not be empty"));
                }
                set.insert(field, value.trim());
            }
        }
        if let Some(website) = &self.website {
            if !(website.starts_with("http://") || website.starts_with("https://"))
                || website.contains(char::is_whitespace)
            {
                return Err(bad("website", "must be an http(s) URI"));
            }
            set.insert("website", website);
        }
        let enums: [(&str, &str, &Option<String>, &[&str]); 3] = [
            ("clinicType", "clinicType", &self.clinic_type, &CLINIC_TYPES),
            ("clinicSize", "clinicSize", &self.clinic_size, &CLINIC_SIZES),
            // The reference service stores this one capitalised (DESIGN.md 2.1 keeps shapes).
            (
                "preferredBgUnits",
                "PreferredBgUnits",
                &self.preferred_bg_units,
                &BG_UNITS,
            ),
        ];
        for (field, stored, value, allowed) in enums {
            if let Some(value) = value {
                if !allowed.contains(&value.as_str()) {
                    return Err(bad(field, &format!("must be one of {allowed:?}")));
                }
                set.insert(stored, value);
            }
        }
        if let Some(numbers) = &self.phone_numbers {
            if numbers.is_empty() {
                return Err(bad("phoneNumbers", "must hold at least one number"));
            }
            let mut stored = Vec::new();
            for (i, number) in numbers.iter().enumerate() {
                if number.number.trim().is_empty() {
                    return Err(bad(
                        &format!("phoneNumbers[{i}].number"),
                        "must not be empty",
                    ));
                }
                if numbers[..i].contains(number) {
                    return Err(bad("phoneNumbers", "items must be unique"));
                }
                let mut entry = doc! { "number": number.number.trim() };
                if let Some(kind) = &number.kind {
                    if kind.trim().is_empty() {
                        return Err(bad(&format!("phoneNumbers[{i}].type"), "must not be empty"));
                    }
                    entry.insert("type", kind);
                }
                stored.push(Bson::Document(entry));
            }
            set.insert("phoneNumbers", stored);
        }
        if let Some(zone) = &self.timezone {
            if !TIMEZONES.contains(zone.as_str()) {
                return Err(bad(
                    "timezone",
                    "must be one of the contract's IANA time zone names (clinicTimezone.v1)",
                ));
            }
            set.insert("timezone", zone);
        }
        if let Some(suppressed) = &self.suppressed_notifications {
            let mut stored = Document::new();
            if let Some(flag) = suppressed.patient_clinic_invitation {
                stored.insert("patientClinicInvitation", flag);
            }
            set.insert("suppressedNotifications", stored);
        }
        Ok(set)
    }
}

fn tier_description(tier: &str) -> &'static str {
    match tier {
        "tier0200" => "Standard",
        "tier0300" => "Premium",
        "tier0400" => "Enterprise",
        _ => "Free",
    }
}

/// A stored clinic as `clinic.v1`.
pub fn to_json(clinic: &Document) -> Value {
    let mut out = serde_json::Map::new();
    let id = clinic
        .get_object_id("_id")
        .map(|o| o.to_hex())
        .unwrap_or_default();
    out.insert("id".into(), json!(id));
    for field in [
        "name",
        "address",
        "city",
        "state",
        "postalCode",
        "country",
        "website",
        "clinicType",
        "clinicSize",
        "timezone",
    ] {
        if let Ok(value) = clinic.get_str(field) {
            out.insert(field.into(), json!(value));
        }
    }
    out.insert(
        "shareCode".into(),
        json!(clinic.get_str("canonicalShareCode").unwrap_or_default()),
    );
    let tier = clinic
        .get_str("tier")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or("tier0100");
    out.insert("tier".into(), json!(tier));
    out.insert("tierDescription".into(), json!(tier_description(tier)));
    out.insert(
        "preferredBgUnits".into(),
        json!(clinic.get_str("PreferredBgUnits").unwrap_or("mg/dL")),
    );
    let admins = clinic.get_array("admins").map(Vec::len).unwrap_or(0);
    let migrated = clinic.get_bool("isMigrated").unwrap_or(false);
    out.insert(
        "canMigrate".into(),
        json!(!migrated && admins > 0 && clinic.get_str("name").is_ok()),
    );
    if let Ok(numbers) = clinic.get_array("phoneNumbers") {
        let numbers: Vec<Value> = numbers
            .iter()
            .filter_map(Bson::as_document)
            .map(|n| {
                let mut number = json!({ "number": n.get_str("number").unwrap_or_default() });
                if let Ok(kind) = n.get_str("type") {
                    number["type"] = json!(kind);
                }
                number
            })
            .collect();
        out.insert("phoneNumbers".into(), json!(numbers));
    }
    if let Ok(suppressed) = clinic.get_document("suppressedNotifications") {
        let mut value = json!({});
        if let Ok(flag) = suppressed.get_bool("patientClinicInvitation") {
            value["patientClinicInvitation"] = json!(flag);
        }
        out.insert("suppressedNotifications".into(), value);
    }
    for (field, id_field) in [("patientTags", "_id"), ("sites", "id")] {
        if let Ok(items) = clinic.get_array(field) {
            let items: Vec<Value> = items
                .iter()
                .filter_map(Bson::as_document)
                .map(|t| {
                    json!({
                        "id": t.get_object_id(id_field).map(|o| o.to_hex()).unwrap_or_default(),
                        "name": t.get_str("name").unwrap_or_default(),
                    })
                })
                .collect();
            out.insert(field.into(), json!(items));
        }
    }
    for field in ["createdTime", "updatedTime"] {
        out.insert(
            field.into(),
            json!(time::text(clinic.get_datetime(field).ok())),
        );
    }
    Value::Object(out)
}

/// Set on a clinic while it is being deleted (the time it began); never shown.
const DELETING: &str = "deletingSince";

/// How long a deletion mark holds: one left by a request that died halfway stops blocking
/// patient additions after this.
const DELETING_HOLDS: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether patients may be added to the clinic: it exists and no deletion is under way.
///
/// # Errors
/// Database failures.
pub async fn open_for_patients(state: &AppState, id: ObjectId) -> ApiResult<bool> {
    let Some(clinic) = state.store.clinics.find_one(doc! { "_id": id }).await? else {
        return Ok(false);
    };
    let deleting = clinic.get_datetime(DELETING).ok().is_some_and(|since| {
        let age = DateTime::now().timestamp_millis() - since.timestamp_millis();
        u128::try_from(age).unwrap_or(0) < DELETING_HOLDS.as_millis()
    });
    Ok(!deleting)
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

/// `GET /v1/clinics` (backend services): `limit`, `offset`, `shareCode`, `createdTimeStart`
/// (inclusive), `createdTimeEnd` (exclusive).
#[utoipa::path(
    get,
    path = "/v1/clinics",
    operation_id = "ListClinics",
    tag = "Clinics",
    params(("limit" = i64, Query), ("offset" = u64, Query), ("shareCode" = String, Query), ("createdTimeStart" = String, Query), ("createdTimeEnd" = String, Query)),
    responses((status = 200, description = "clinics.v1", body = serde_json::Value), (status = 400, description = "error.v1", body = serde_json::Value), (status = 401, description = "error.v1", body = serde_json::Value), (status = 403, description = "error.v1", body = serde_json::Value)),
    security(("sessionToken" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> ApiResult<Json<Value>> {
    require_service(&caller)?;
    let (offset, limit) = params.page()?;
    let mut filter = Document::new();
    if let Some(code) = params.text("shareCode") {
        filter.insert("shareCodes", code);
    }
    let mut created = Document::new();
    for (name, operator) in [("createdTimeStart", "$gte"), ("createdTimeEnd", "$lt")] {
        if let Some(text) = params.text(name) {
            let at = time::parse(text).ok_or_else(|| {
                bad(
                    &format!("query parameter {name}"),
                    "must be an RFC 3339 date-time",
                )
            })?;
            created.insert(operator, at);
        }
    }
    if !created.is_empty() {
        filter.insert("createdTime", created);
    }
    let options = FindOptions::builder()
        .sort(doc! { "createdTime": 1, "_id": 1 })
        .skip(offset)
        .limit(limit)
        .build();
    let clinics: Vec<Document> = state
        .store
        .clinics
        .find(filter)
        .with_options(options)
        .await?
        .try_collect()
        .await?;
    Ok(Json(Value::Array(clinics.iter().map(to_json).collect())))
}

/// `POST /v1/clinics`: any user; the caller becomes the clinic's CLINIC_ADMIN.
#[utoipa::path(
    post,
    path = "/v1/clinics",
    operation_id = "CreateClinic",
    tag = "Clinics",
    request_body(content = serde_json::Value, description = "clinic.v1", content_type = "application/json"),
    responses((status = 200, description = "clinic.v1", body = serde_json::Value), (status = 400, description = "error.v1", body = serde_json::Value), (status = 401, description = "error.v1", body = serde_json::Value), (status = 403, description = "error.v1", body = serde_json::Value)),
    security(("sessionToken" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<ClinicInput>,
) -> ApiResult<Json<Value>> {
    if caller.service {
        return Err(ApiError::Refused(
            "a clinic is created by the user who will administer it, not by a service".into(),
        ));
    }
    let mut clinic = input.to_set()?;
    if !clinic.contains_key("name") {
        return Err(bad("name", "is required"));
    }
    // The creator becomes a clinician, and every clinician has an address (clinician.v1).
    let email = caller.email.clone().ok_or_else(|| {
        ApiError::BadRequest(
            "the token carries no email claim; the clinic's admin needs an address".into(),
        )
    })?;
    let now = DateTime::now();
    let id = ObjectId::new();
    clinic.insert("_id", id);
    clinic.insert("admins", vec![caller.user_id.clone()]);
    clinic.insert("isMigrated", false);
    clinic.insert("tier", "tier0100");
    if !clinic.contains_key("PreferredBgUnits") {
        clinic.insert("PreferredBgUnits", "mg/dL");
    }
    clinic.insert("createdTime", now);
    clinic.insert("updatedTime", now);
    // A collision with an existing code is astronomically rare but possible: draw again.
    let mut attempts = 0;
    loop {
        let code = share_code::generate();
        clinic.insert("canonicalShareCode", &code);
        clinic.insert("shareCodes", vec![code]);
        match state.store.clinics.insert_one(&clinic).await {
            Ok(_) => break,
            Err(error) if is_duplicate_key(&error) && attempts < 100 => attempts += 1,
            Err(error) => return Err(error.into()),
        }
    }
    let mut admin = doc! {
        "clinicId": id, "userId": &caller.user_id, "email": email.to_lowercase(),
        "roles": ["CLINIC_ADMIN"], "createdTime": now, "updatedTime": now,
    };
    if let Some(name) = &caller.name {
        admin.insert("name", name);
    }
    // No transactions on FerretDB: undo the clinic if its admin cannot be written.
    if let Err(error) = state.store.clinicians.insert_one(admin).await {
        let _ = state.store.clinics.delete_one(doc! { "_id": id }).await;
        return Err(error.into());
    }
    Ok(Json(to_json(&clinic)))
}

/// `GET /v1/clinics/{clinicId}`: any authenticated caller.
#[utoipa::path(
    get,
    path = "/v1/clinics/{clinicId}",
    operation_id = "GetClinic",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    responses((status = 200, description = "clinic.v1", body = serde_json::Value), (status = 400, description = "error.v1", body = serde_json::Value), (status = 401, description = "error.v1", body = serde_json::Value), (status = 404, description = "error.v1", body = serde_json::Value)),
    security(("sessionToken" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = object_id("clinicId", &id)?;
    Ok(Json(to_json(&find(&state, id).await?)))
}

/// `GET /v1/clinics/share_code/{shareCode}`: any authenticated caller; any of the clinic's codes.
#[utoipa::path(
    get,
    path = "/v1/clinics/share_code/{shareCode}",
    operation_id = "GetClinicByShareCode",
    tag = "Clinics",
    params(("shareCode" = String, Path)),
    responses((status = 200, description = "clinic.v1", body = serde_json::Value), (status = 400, description = "error.v1", body = serde_json::Value), (status = 401, description = "error.v1", body = serde_json::Value), (status = 404, description = "error.v1", body = serde_json::Value)),
    security(("sessionToken" = []))
)]
pub async fn get_by_share_code(
    State(state): State<AppState>,
    _caller: Caller,
    Path(code): Path<String>,
) -> ApiResult<Json<Value>> {
    let code = code.to_uppercase();
    if !share_code::is_valid(&code) {
        return Err(bad(
            "shareCode",
            "must be three groups of four characters, like ABCD-EFGH-JKLM",
        ));
    }
    let clinic = state
        .store
        .clinics
        .find_one(doc! { "shareCodes": &code })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no clinic has share code {code}")))?;
    Ok(Json(to_json(&clinic)))
}

/// `PUT /v1/clinics/{clinicId}`: admins and services; sets what the body gives, nothing else.
#[utoipa::path(
    put,
    path = "/v1/clinics/{clinicId}",
    operation_id = "UpdateClinic",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    request_body(content = serde_json::Value, description = "clinic.v1", content_type = "application/json"),
    responses((status = 200, description = "clinic.v1", body = serde_json::Value), (status = 400, description = "error.v1", body = serde_json::Value), (status = 401, description = "error.v1", body = serde_json::Value), (status = 403, description = "error.v1", body = serde_json::Value), (status = 404, description = "error.v1", body = serde_json::Value)),
    security(("sessionToken" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<ClinicInput>,
) -> ApiResult<Json<Value>> {
    let id = object_id("clinicId", &id)?;
    find(&state, id).await?;
    require(&state.store, &caller, id, Need::Write).await?;
    let mut set = input.to_set()?;
    set.insert("updatedTime", DateTime::now());
    state
        .store
        .clinics
        .update_one(doc! { "_id": id }, doc! { "$set": set })
        .await?;
    Ok(Json(to_json(&find(&state, id).await?)))
}

/// `DELETE /v1/clinics/{clinicId}`: admins; refused (409) while the clinic has patients. The
/// clinic and its clinicians are archived before they are deleted.
#[utoipa::path(
    delete,
    path = "/v1/clinics/{clinicId}",
    operation_id = "DeleteClinic",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    responses((status = 204, description = "no body"), (status = 401, description = "error.v1", body = serde_json::Value), (status = 403, description = "error.v1", body = serde_json::Value), (status = 404, description = "error.v1", body = serde_json::Value), (status = 409, description = "error.v1", body = serde_json::Value)),
    security(("sessionToken" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = object_id("clinicId", &id)?;
    let clinic = find(&state, id).await?;
    if caller.service {
        return Err(ApiError::Forbidden);
    }
    require(&state.store, &caller, id, Need::Write).await?;
    // Marked before the patients are counted: a patient added after the count sees the mark
    // and takes itself back (`open_for_patients`), so no patient outlives its clinic. FerretDB
    // has no transactions to do this in one step.
    let now = DateTime::now();
    state
        .store
        .clinics
        .update_one(doc! { "_id": id }, doc! { "$set": { DELETING: now } })
        .await?;
    let patients = state
        .store
        .patients
        .count_documents(doc! { "clinicId": id })
        .await?;
    if patients > 0 {
        state
            .store
            .clinics
            .update_one(doc! { "_id": id }, doc! { "$unset": { DELETING: "" } })
            .await?;
        return Err(ApiError::Conflict(format!(
            "the clinic has {patients} patient(s); remove them first"
        )));
    }
    let clinicians: Vec<Document> = state
        .store
        .clinicians
        .find(doc! { "clinicId": id })
        .await?
        .try_collect()
        .await?;
    for clinician in &clinicians {
        state
            .store
            .clinician_deletions
            .insert_one(doc! { "deletedTime": now, "deletedByUserId": &caller.user_id, "clinician": clinician })
            .await?;
    }
    state
        .store
        .clinic_deletions
        .insert_one(
            doc! { "deletedTime": now, "deletedByUserId": &caller.user_id, "clinic": &clinic },
        )
        .await?;
    state
        .store
        .clinicians
        .delete_many(doc! { "clinicId": id })
        .await?;
    state.store.clinics.delete_one(doc! { "_id": id }).await?;
    Ok(StatusCode::NO_CONTENT)
}
