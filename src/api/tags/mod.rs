//! A clinic's patient tags and sites: CreatePatientTag and UpdatePatientTag (members),
//! DeletePatientTag, AssignPatientTagToClinicPatients and DeletePatientTagFromClinicPatients
//! (admins); CreateSite, UpdateSite and DeleteSite (admins). Services may do all.
//!
//! Rules, as Tidepool's: at most 50 tags and 50 sites per clinic (409 beyond); tag names unique
//! ignoring case and spaces, site names ignoring case (409); names as the contract's patterns
//! say (400 naming `name`). A deleted tag leaves its patients at once (Tidepool's worker does
//! it later, from the clinic's change) and is recorded in `lastDeletedPatientTag`; a deleted
//! site leaves the patients that carried it. The lists live in the clinic document and change
//! through [`clinics::edit_list`].

use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, doc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::access::{Need, require};
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{JsonBody, Path, object_id, user_id};
use super::store::rewrite_list;
use super::validate::{bad, unique};
use super::{AppState, clinics};

/// The most tags, and the most sites, a clinic has.
pub const MAX_PER_CLINIC: usize = 50;

/// `patientTag.v1`'s `name`: 1 to 20 characters, letters, digits, `_+><-` and (after the first)
/// white space.
static TAG_NAME: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^[\p{L}\p{N}_+><-]{1}[\p{L}\p{N}\s_+><-]*$").expect("BUG: the pattern")
});
/// `siteName.v1`: 1 to 200 characters, printable, spaces after the first.
static SITE_NAME: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^[[:graph:]\p{L}\p{N}][[:graph:]\p{L}\p{N} ]*$").expect("BUG: the pattern")
});

/// A tag or a site as sent: its name (an `id` sent along is ignored; the path names it).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct NameInput {
    name: Option<String>,
}

/// `patientTag.v1` / `site.v1` as answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct Labelled {
    id: String,
    name: String,
}

/// The two lists, with what differs between them.
#[derive(Clone, Copy)]
enum Kind {
    Tag,
    Site,
}

impl Kind {
    /// The clinic's list.
    fn field(self) -> &'static str {
        match self {
            Kind::Tag => "patientTags",
            Kind::Site => "sites",
        }
    }
    /// The id's field in an item (Tidepool's documents differ).
    fn id_field(self) -> &'static str {
        match self {
            Kind::Tag => "_id",
            Kind::Site => "id",
        }
    }
    fn noun(self) -> &'static str {
        match self {
            Kind::Tag => "tag",
            Kind::Site => "site",
        }
    }
    /// The name, validated as the contract says.
    fn name(self, input: &NameInput) -> ApiResult<String> {
        let name = input
            .name
            .as_deref()
            .ok_or_else(|| bad("name", "is required"))?;
        let (max, pattern) = match self {
            Kind::Tag => (20, &*TAG_NAME),
            Kind::Site => (200, &*SITE_NAME),
        };
        let length = name.chars().count();
        if length == 0 {
            return Err(bad("name", "must not be empty"));
        }
        if length > max {
            return Err(bad("name", &format!("must be at most {max} characters")));
        }
        if !pattern.is_match(name) {
            return Err(bad("name", "has characters the contract does not allow"));
        }
        Ok(name.to_owned())
    }
    /// What two names must not share: tags ignore case and spaces, sites case.
    fn folded(self, name: &str) -> String {
        match self {
            Kind::Tag => name
                .chars()
                .filter(|c| !c.is_whitespace())
                .flat_map(char::to_lowercase)
                .collect(),
            Kind::Site => name.to_lowercase(),
        }
    }
    fn item(self, id: ObjectId, name: &str) -> Document {
        doc! { self.id_field(): id, "name": name }
    }
    fn answer(self, item: &Document) -> Labelled {
        Labelled {
            id: item
                .get_object_id(self.id_field())
                .map(|o| o.to_hex())
                .unwrap_or_default(),
            name: item.get_str("name").unwrap_or_default().to_owned(),
        }
    }
}

/// Adds a named item to the clinic's list `kind`.
async fn create(
    state: &AppState,
    clinic: ObjectId,
    kind: Kind,
    name: String,
) -> ApiResult<Labelled> {
    let id = ObjectId::new();
    clinics::edit_list(state, clinic, kind.field(), |items| {
        if items.len() >= MAX_PER_CLINIC {
            return Err(ApiError::Conflict(format!(
                "a clinic has at most {MAX_PER_CLINIC} {}s",
                kind.noun()
            )));
        }
        taken(kind, items, None, &name)?;
        let item = kind.item(id, &name);
        items.push(item.clone());
        Ok(kind.answer(&item))
    })
    .await
}

/// Renames the item `id` of the clinic's list `kind`.
async fn rename(
    state: &AppState,
    clinic: ObjectId,
    kind: Kind,
    id: ObjectId,
    name: String,
) -> ApiResult<Labelled> {
    clinics::edit_list(state, clinic, kind.field(), |items| {
        taken(kind, items, Some(id), &name)?;
        let item = items
            .iter_mut()
            .find(|i| i.get_object_id(kind.id_field()) == Ok(id))
            .ok_or_else(|| missing(kind, id))?;
        item.insert("name", &name);
        Ok(kind.answer(item))
    })
    .await
}

/// Removes the item `id` from the clinic's list `kind`.
async fn remove(state: &AppState, clinic: ObjectId, kind: Kind, id: ObjectId) -> ApiResult<()> {
    clinics::edit_list(state, clinic, kind.field(), |items| {
        let before = items.len();
        items.retain(|i| i.get_object_id(kind.id_field()) != Ok(id));
        if items.len() == before {
            return Err(missing(kind, id));
        }
        Ok(())
    })
    .await
}

fn taken(kind: Kind, items: &[Document], except: Option<ObjectId>, name: &str) -> ApiResult<()> {
    let folded = kind.folded(name);
    let clash = items.iter().any(|i| {
        i.get_object_id(kind.id_field()).ok() != except
            && kind.folded(i.get_str("name").unwrap_or_default()) == folded
    });
    if clash {
        return Err(ApiError::Conflict(format!(
            "the clinic has a {} with this name",
            kind.noun()
        )));
    }
    Ok(())
}

fn missing(kind: Kind, id: ObjectId) -> ApiError {
    ApiError::NotFound(format!("{} {} not found", kind.noun(), id.to_hex()))
}

/// The clinic's tag `id`, or 404.
async fn existing_tag(state: &AppState, clinic: ObjectId, id: ObjectId) -> ApiResult<()> {
    let found = clinics::find(state, clinic).await?;
    let known = found.get_array("patientTags").is_ok_and(|tags| {
        tags.iter()
            .filter_map(Bson::as_document)
            .any(|t| t.get_object_id("_id") == Ok(id))
    });
    if known {
        Ok(())
    } else {
        Err(missing(Kind::Tag, id))
    }
}

/// `POST /v1/clinics/{clinicId}/patient_tags`: members and services.
#[utoipa::path(
    post,
    path = "/v1/clinics/{clinicId}/patient_tags",
    operation_id = "CreatePatientTag",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    request_body(content = NameInput, description = "patientTag.v1"),
    responses((status = 200, description = "patientTag.v1", body = Labelled), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 409, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn create_tag(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic): Path<String>,
    JsonBody(input): JsonBody<NameInput>,
) -> ApiResult<Json<Labelled>> {
    let clinic = object_id("clinicId", &clinic)?;
    let name = Kind::Tag.name(&input)?;
    require(&state.store, &caller, clinic, Need::Read).await?;
    Ok(Json(create(&state, clinic, Kind::Tag, name).await?))
}

/// `PUT /v1/clinics/{clinicId}/patient_tags/{patientTagId}`: members and services rename a tag.
#[utoipa::path(
    put,
    path = "/v1/clinics/{clinicId}/patient_tags/{patientTagId}",
    operation_id = "UpdatePatientTag",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("patientTagId" = String, Path)),
    request_body(content = NameInput, description = "patientTag.v1"),
    responses((status = 200, description = "patientTag.v1", body = Labelled), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 409, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn update_tag(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic, tag)): Path<(String, String)>,
    JsonBody(input): JsonBody<NameInput>,
) -> ApiResult<Json<Labelled>> {
    let clinic = object_id("clinicId", &clinic)?;
    let tag = object_id("patientTagId", &tag)?;
    let name = Kind::Tag.name(&input)?;
    require(&state.store, &caller, clinic, Need::Read).await?;
    Ok(Json(rename(&state, clinic, Kind::Tag, tag, name).await?))
}

/// `DELETE /v1/clinics/{clinicId}/patient_tags/{patientTagId}`: admins and services; the tag
/// leaves the clinic and its patients; 204.
#[utoipa::path(
    delete,
    path = "/v1/clinics/{clinicId}/patient_tags/{patientTagId}",
    operation_id = "DeletePatientTag",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("patientTagId" = String, Path)),
    responses((status = 204, description = "no body"), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn delete_tag(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let clinic = object_id("clinicId", &clinic)?;
    let tag = object_id("patientTagId", &tag)?;
    require(&state.store, &caller, clinic, Need::Write).await?;
    remove(&state, clinic, Kind::Tag, tag).await?;
    state
        .store
        .clinics
        .update_one(
            doc! { "_id": clinic },
            doc! { "$set": { "lastDeletedPatientTag": tag, "updatedTime": DateTime::now() } },
        )
        .await?;
    untag(&state, clinic, tag, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The user ids of `tidepoolUserIds.v1`: 1 to 1000, unique.
fn user_ids(ids: &[String]) -> ApiResult<Vec<String>> {
    if ids.is_empty() || ids.len() > 1_000 {
        return Err(bad("body", "from 1 to 1000 user ids"));
    }
    unique("body", ids)?;
    ids.iter()
        .enumerate()
        .map(|(i, id)| user_id(&format!("[{i}]"), id))
        .collect()
}

/// Removes `tag` from the clinic's patients (`users` only, when given).
async fn untag(
    state: &AppState,
    clinic: ObjectId,
    tag: ObjectId,
    users: Option<Vec<String>>,
) -> ApiResult<()> {
    let mut filter = doc! { "clinicId": clinic, "tags": tag };
    if let Some(users) = users {
        filter.insert("userId", doc! { "$in": users });
    }
    state
        .store
        .patients
        .update_many(filter, doc! { "$pull": { "tags": tag } })
        .await?;
    Ok(())
}

/// `POST /v1/clinics/{clinicId}/patients/assign_tag/{patientTagId}`: admins and services tag
/// the listed patients (1 to 1000 user ids; those not patients of the clinic are skipped).
#[utoipa::path(
    post,
    path = "/v1/clinics/{clinicId}/patients/assign_tag/{patientTagId}",
    operation_id = "AssignPatientTagToClinicPatients",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("patientTagId" = String, Path)),
    request_body(content = Vec<String>, description = "tidepoolUserIds.v1"),
    responses((status = 200, description = "no body"), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn assign_tag(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic, tag)): Path<(String, String)>,
    JsonBody(users): JsonBody<Vec<String>>,
) -> ApiResult<StatusCode> {
    let clinic = object_id("clinicId", &clinic)?;
    let tag = object_id("patientTagId", &tag)?;
    let users = user_ids(&users)?;
    require(&state.store, &caller, clinic, Need::Write).await?;
    existing_tag(&state, clinic, tag).await?;
    state
        .store
        .patients
        .update_many(
            doc! { "clinicId": clinic, "userId": { "$in": users } },
            doc! { "$addToSet": { "tags": tag } },
        )
        .await?;
    Ok(StatusCode::OK)
}

/// `POST /v1/clinics/{clinicId}/patients/delete_tag/{patientTagId}`: admins and services
/// remove the tag from the listed patients, or from all without a body.
#[utoipa::path(
    post,
    path = "/v1/clinics/{clinicId}/patients/delete_tag/{patientTagId}",
    operation_id = "DeletePatientTagFromClinicPatients",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("patientTagId" = String, Path)),
    request_body(content = Vec<String>, description = "tidepoolUserIds.v1"),
    responses((status = 200, description = "no body"), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn unassign_tag(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic, tag)): Path<(String, String)>,
    users: Option<JsonBody<Option<Vec<String>>>>,
) -> ApiResult<StatusCode> {
    let clinic = object_id("clinicId", &clinic)?;
    let tag = object_id("patientTagId", &tag)?;
    let users = users
        .and_then(|JsonBody(users)| users)
        .map(|users| user_ids(&users))
        .transpose()?;
    require(&state.store, &caller, clinic, Need::Write).await?;
    clinics::find(&state, clinic).await?;
    untag(&state, clinic, tag, users).await?;
    Ok(StatusCode::OK)
}

/// `POST /v1/clinics/{clinicId}/sites`: admins and services.
#[utoipa::path(
    post,
    path = "/v1/clinics/{clinicId}/sites",
    operation_id = "CreateSite",
    tag = "Clinics",
    params(("clinicId" = String, Path)),
    request_body(content = NameInput, description = "siteCreation.v1"),
    responses((status = 200, description = "site.v1", body = Labelled), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 409, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn create_site(
    State(state): State<AppState>,
    caller: Caller,
    Path(clinic): Path<String>,
    JsonBody(input): JsonBody<NameInput>,
) -> ApiResult<Json<Labelled>> {
    let clinic = object_id("clinicId", &clinic)?;
    let name = Kind::Site.name(&input)?;
    require(&state.store, &caller, clinic, Need::Write).await?;
    Ok(Json(create(&state, clinic, Kind::Site, name).await?))
}

/// `PUT /v1/clinics/{clinicId}/sites/{siteId}`: admins and services rename a site (and its
/// copies in the patients that carry it).
#[utoipa::path(
    put,
    path = "/v1/clinics/{clinicId}/sites/{siteId}",
    operation_id = "UpdateSite",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("siteId" = String, Path)),
    request_body(content = NameInput, description = "site.v1"),
    responses((status = 200, description = "site.v1", body = Labelled), (status = 400, response = ErrorBody), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody), (status = 409, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn update_site(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic, site)): Path<(String, String)>,
    JsonBody(input): JsonBody<NameInput>,
) -> ApiResult<Json<Labelled>> {
    let clinic = object_id("clinicId", &clinic)?;
    let site = object_id("siteId", &site)?;
    let name = Kind::Site.name(&input)?;
    require(&state.store, &caller, clinic, Need::Write).await?;
    let renamed = rename(&state, clinic, Kind::Site, site, name.clone()).await?;
    patient_sites(&state, clinic, site, || {
        Some(doc! { "id": site, "name": &name })
    })
    .await?;
    Ok(Json(renamed))
}

/// Rewrites the copy of `site` in each patient of the clinic that carries it: `change` answers
/// the copy's replacement (`None`: removed). Each patient's list is rewritten on condition it
/// did not change meanwhile ([`rewrite_list`]), and read again if it did.
async fn patient_sites(
    state: &AppState,
    clinic: ObjectId,
    site: ObjectId,
    change: impl Fn() -> Option<Document>,
) -> ApiResult<()> {
    use futures::TryStreamExt as _;
    let patients = &state.store.patients;
    let carrying: Vec<Document> = patients
        .find(doc! { "clinicId": clinic, "sites.id": site })
        .await?
        .try_collect()
        .await?;
    let replace = |sites: &mut Vec<Document>| {
        *sites = std::mem::take(sites)
            .into_iter()
            .filter_map(|s| match s.get_object_id("id") {
                Ok(id) if id == site => change(),
                _ => Some(s),
            })
            .collect();
        Ok(())
    };
    for mut patient in carrying {
        for _ in 0..10 {
            if rewrite_list(patients, &patient, "sites", false, replace)
                .await?
                .is_some()
            {
                break;
            }
            let id = patient.get("_id").cloned().unwrap_or(Bson::Null);
            match patients.find_one(doc! { "_id": id }).await? {
                Some(now) => patient = now,
                None => break,
            }
        }
    }
    Ok(())
}

/// `DELETE /v1/clinics/{clinicId}/sites/{siteId}`: admins and services; the site leaves the
/// clinic and its patients; 204.
#[utoipa::path(
    delete,
    path = "/v1/clinics/{clinicId}/sites/{siteId}",
    operation_id = "DeleteSite",
    tag = "Clinics",
    params(("clinicId" = String, Path), ("siteId" = String, Path)),
    responses((status = 204, description = "no body"), (status = 401, response = ErrorBody), (status = 403, response = ErrorBody), (status = 404, response = ErrorBody)),
    security(("sessionToken" = []))
)]
pub async fn delete_site(
    State(state): State<AppState>,
    caller: Caller,
    Path((clinic, site)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let clinic = object_id("clinicId", &clinic)?;
    let site = object_id("siteId", &site)?;
    require(&state.store, &caller, clinic, Need::Write).await?;
    remove(&state, clinic, Kind::Site, site).await?;
    patient_sites(&state, clinic, site, || None).await?;
    Ok(StatusCode::NO_CONTENT)
}
