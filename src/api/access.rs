//! The contract's authorisation model: members read, admins write, backend services pass, and
//! the self rules live with the operations that have them.

use bson::oid::ObjectId;
use bson::{Bson, doc};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::store::Store;

/// What a user is in one clinic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Not a member (or only a PRESCRIBER, which grants nothing here).
    None,
    /// CLINIC_MEMBER: reads.
    Member,
    /// CLINIC_ADMIN: reads and writes.
    Admin,
}

/// What an operation needs of a user caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A member or an admin.
    Read,
    /// An admin.
    Write,
}

/// The caller's role in `clinic` (services have none; check them first).
///
/// # Errors
/// Database failures.
pub async fn role(store: &Store, clinic: ObjectId, user: &str) -> ApiResult<Role> {
    let found = store
        .clinicians
        .find_one(doc! { "clinicId": clinic, "userId": user })
        .await?;
    let roles: Vec<String> = found
        .and_then(|d| d.get_array("roles").ok().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| match r {
            Bson::String(s) => Some(s),
            _ => None,
        })
        .collect();
    Ok(if roles.iter().any(|r| r == "CLINIC_ADMIN") {
        Role::Admin
    } else if roles.iter().any(|r| r == "CLINIC_MEMBER") {
        Role::Member
    } else {
        Role::None
    })
}

/// Passes a service, or a user with the role `need` asks for in `clinic`.
///
/// # Errors
/// 404 when the clinic does not exist (as the routes that look the clinic up first answer;
/// any user may read any clinic, so this tells nobody anything new), 403 otherwise.
pub async fn require(
    store: &Store,
    caller: &Caller,
    clinic: ObjectId,
    need: Need,
) -> ApiResult<()> {
    if caller.service {
        return Ok(());
    }
    let role = role(store, clinic, &caller.user_id).await?;
    let allowed = match need {
        Need::Read => role >= Role::Member,
        Need::Write => role == Role::Admin,
    };
    if allowed {
        return Ok(());
    }
    // Only on the refusal path: the common, allowed one costs no extra query.
    exists(store, clinic).await?;
    Err(ApiError::Forbidden)
}

/// As [`require`], and the clinic must exist (404) for services too: for the routes that read
/// a clinic's lists. A user's membership implies the clinic (a clinic's deletion removes its
/// clinicians), so only a service's request costs a clinic lookup.
///
/// # Errors
/// 404 when the clinic does not exist, 403 as [`require`].
pub async fn require_clinic(
    store: &Store,
    caller: &Caller,
    clinic: ObjectId,
    need: Need,
) -> ApiResult<()> {
    if caller.service {
        return exists(store, clinic).await;
    }
    require(store, caller, clinic, need).await
}

/// As [`require`], with `read` (the request's own query) running at the same time: the answer
/// waits for the slower of the two instead of their sum. A refusal wins over what `read` found.
///
/// # Errors
/// [`require`]'s, then `read`'s.
pub async fn require_while<T>(
    store: &Store,
    caller: &Caller,
    clinic: ObjectId,
    need: Need,
    read: impl std::future::Future<Output = ApiResult<T>>,
) -> ApiResult<T> {
    let (allowed, found) = tokio::join!(require(store, caller, clinic, need), read);
    allowed?;
    found
}

async fn exists(store: &Store, clinic: ObjectId) -> ApiResult<()> {
    match store.clinics.find_one(doc! { "_id": clinic }).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound(format!(
            "clinic {} not found",
            clinic.to_hex()
        ))),
    }
}

/// Passes a backend service only.
///
/// # Errors
/// 403 for users.
pub fn require_service(caller: &Caller) -> ApiResult<()> {
    if caller.service {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}
