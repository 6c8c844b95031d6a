//! Request extractors whose rejections answer `{code, message}` naming the field, instead of
//! axum's plain-text rejections: the JSON body, the path and the query.

use std::collections::HashMap;
use std::str::FromStr;

use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::request::Parts;
use bson::oid::ObjectId;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body deserialized into `T`; a malformed body or a wrong field is a 400 that says where.
/// No body at all reads as `{}` (the contract makes every request body optional): an update
/// without one changes nothing, a creation without one misses its required fields.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match <Self as OptionalFromRequest<S>>::from_request(req, state).await? {
            Some(body) => Ok(body),
            None => parse(b"{}").map(JsonBody),
        }
    }
}

/// An optional body (`Option<JsonBody<T>>`): none when the request has no body, or only white
/// space.
impl<S: Send + Sync, T: DeserializeOwned> OptionalFromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let bytes = read(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        parse(&bytes).map(|value| Some(JsonBody(value)))
    }
}

/// The body's bytes; a declared content type other than JSON is a 415 (none declared is read
/// as JSON).
async fn read<S: Send + Sync>(req: Request, state: &S) -> Result<axum::body::Bytes, ApiError> {
    if let Some(declared) = req.headers().get(axum::http::header::CONTENT_TYPE) {
        let essence = declared
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::UnsupportedMediaType(essence));
        }
    }
    axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|e| match e.status() {
            axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
            _ => ApiError::BadRequest(format!("unreadable request body: {e}")),
        })
}

/// One JSON value of type `T` and nothing after it but white space; a wrong field is a 400
/// that names it.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let malformed = !matches!(e.inner().classify(), serde_json::error::Category::Data);
        ApiError::BadRequest(if path == "." || malformed {
            format!("invalid JSON body: {}", e.inner())
        } else {
            format!("{path}: {}", e.inner())
        })
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// Path parameters, as axum's `Path`, whose rejection (a percent-encoded segment that is not
/// UTF-8, say) is answered in the error shape instead of axum's plain text.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) if rejection.status().is_server_error() => Err(ApiError::Internal(
                anyhow::anyhow!("path parameters: {}", rejection.body_text()),
            )),
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "path: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// The most records one page carries.
pub const MAX_LIMIT: i64 = 1_000;

/// Query parameters, read one by one with their names in the errors.
pub struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        Ok(Params(
            form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}

impl Params {
    /// The raw value of `name`, if given.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `name` parsed, if given.
    ///
    /// # Errors
    /// 400 naming the parameter when it does not parse.
    pub fn parsed<T: FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.text(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    ApiError::BadRequest(format!("query parameter {name}: {v:?} is not valid"))
                })
            })
            .transpose()
    }

    /// `offset` (0..=i64::MAX, default 0: what the database can skip) and `limit` (at least 1,
    /// default 10; more than 1,000, however large, reads as 1,000), as the contract pages.
    ///
    /// # Errors
    /// 400 naming the parameter.
    pub fn page(&self) -> Result<(u64, i64), ApiError> {
        let offset = self.parsed::<i64>("offset")?.unwrap_or(0);
        let Ok(offset) = u64::try_from(offset) else {
            return Err(ApiError::BadRequest(format!(
                "query parameter offset: {offset} is negative"
            )));
        };
        let limit = match self.text("limit") {
            None => 10,
            // The contract sets no maximum: a larger page is cut to what one answer carries.
            Some(digits) if digits.len() > 4 && digits.bytes().all(|b| b.is_ascii_digit()) => {
                MAX_LIMIT
            }
            Some(_) => self.parsed::<i64>("limit")?.unwrap_or(10).min(MAX_LIMIT),
        };
        if limit < 1 {
            return Err(ApiError::BadRequest(format!(
                "query parameter limit: {limit} is less than 1"
            )));
        }
        Ok((offset, limit))
    }
}

/// A path id that must be an ObjectId (24 hex characters).
///
/// # Errors
/// 400 naming the parameter.
pub fn object_id(name: &str, value: &str) -> Result<ObjectId, ApiError> {
    if value.len() != 24
        || !value
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(ApiError::BadRequest(format!(
            "{name} must be 24 lower-case hex characters, got {value:?}"
        )));
    }
    ObjectId::parse_str(value).map_err(|e| ApiError::BadRequest(format!("{name}: {e}")))
}

/// A clinic id on the routes whose contract sets no pattern for it (the migration routes):
/// text that is no ObjectId names no clinic, so it is a 404 rather than a 400.
///
/// # Errors
/// 404.
pub fn known_clinic_id(value: &str) -> Result<ObjectId, ApiError> {
    object_id("clinicId", value)
        .map_err(|_| ApiError::NotFound(format!("clinic {value:?} not found")))
}

/// A Tidepool user id: 10 hex characters (legacy) or a UUID.
///
/// # Errors
/// 400 naming the parameter.
pub fn user_id(name: &str, value: &str) -> Result<String, ApiError> {
    let legacy = value.len() == 10
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let uuid =
        value.len() == 36 && uuid::Uuid::parse_str(value).is_ok() && value == value.to_lowercase();
    if legacy || uuid {
        Ok(value.to_owned())
    } else {
        Err(ApiError::BadRequest(format!(
            "{name} must be a Tidepool user id (10 hex characters or a UUID), got {value:?}"
        )))
    }
}
