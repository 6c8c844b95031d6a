//! The API's one error type: each variant is one status code, answered as the contract's
//! `error.v1` `{code, message}`; internal causes are logged once and never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `error.v1`, the body of every error answer; in the served document the one response
/// every operation's error statuses refer to.
#[derive(Debug, serde::Serialize, utoipa::ToSchema, utoipa::ToResponse)]
#[response(description = "error.v1")]
pub struct ErrorBody {
    /// The HTTP status code.
    pub code: u16,
    /// What went wrong; a validation error starts with the field.
    pub message: String,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the caller may not do this.
    #[error("forbidden")]
    Forbidden,
    /// 403 with the reason (a rule about the change, not about the caller's role).
    #[error("{0}")]
    Refused(String),
    /// 404: the named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 409: the change conflicts with what is stored (a unique value taken, a rule).
    #[error("{0}")]
    Conflict(String),
    /// 408: the request took longer than `http.request_timeout`.
    #[error("the request took longer than {0:?}")]
    Timeout(std::time::Duration),
    /// 413: the request body is larger than `http.body_limit_bytes`.
    #[error("the request body is larger than this server accepts")]
    TooLarge,
    /// 415: the body is declared as something other than JSON.
    #[error("request bodies are JSON (application/json), not {0:?}")]
    UnsupportedMediaType(String),
    /// 414: the request target is longer than the API reads.
    #[error("the request target is longer than {0} bytes")]
    UriTooLong(usize),
    /// 431: more header fields, or header bytes, than the API reads.
    #[error("the request has more than {fields} header fields or {bytes} header bytes")]
    HeadersTooLarge {
        /// The most fields.
        fields: usize,
        /// The most bytes of names and values.
        bytes: usize,
    },
    /// 402: the clinic reached its patient limit (`patientCountSettings.hardLimit`).
    #[error("{0}")]
    PaymentRequired(String),
    /// 422: the change would break an invariant (the last admin).
    #[error("{0}")]
    Unprocessable(String),
    /// 500: anything else; the cause is logged, not sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The status code of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::Refused(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PaymentRequired(_) => StatusCode::PAYMENT_REQUIRED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = %format!("{cause:#}"), "Request failed.");
        }
        let body = ErrorBody {
            code: status.as_u16(),
            message: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}

impl From<mongodb::error::Error> for ApiError {
    fn from(error: mongodb::error::Error) -> Self {
        if is_duplicate_key(&error) {
            return ApiError::Conflict("a record with the same unique value exists".into());
        }
        ApiError::Internal(anyhow::Error::new(error).context("database"))
    }
}

/// axum's own 405 (which lists the route's methods in `Allow`, and has no body) in the error
/// shape, `Allow` kept.
pub async fn method_not_allowed(response: Response) -> Response {
    use axum::http::header::{ALLOW, CONTENT_TYPE};
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response.headers().contains_key(CONTENT_TYPE)
    {
        return response;
    }
    let mut shaped = ApiError::MethodNotAllowed.into_response();
    if let Some(allow) = response.headers().get(ALLOW) {
        shaped.headers_mut().insert(ALLOW, allow.clone());
    }
    shaped
}

/// A database error, with a unique-index conflict worded as `message` (what is taken).
pub fn taken(message: &str) -> impl FnOnce(mongodb::error::Error) -> ApiError + '_ {
    move |error| match ApiError::from(error) {
        ApiError::Conflict(_) => ApiError::Conflict(message.to_owned()),
        other => other,
    }
}

/// FerretDB answers an update or findAndModify that breaks a unique index with code 1
/// (`InternalError`) and PostgreSQL's message instead of 11000 (inserts get 11000).
fn ferretdb_unique_violation(error: &mongodb::error::CommandError) -> bool {
    error.code == 1 && error.message.contains("(SQLSTATE 23505)")
}

/// Whether a write failed on a unique index (code 11000), on MongoDB and FerretDB alike.
pub fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::InsertMany(e) => e.write_errors.iter().flatten().any(|w| w.code == 11000),
        ErrorKind::Command(e) => e.code == 11000 || ferretdb_unique_violation(e),
        _ => false,
    }
}

/// The result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
