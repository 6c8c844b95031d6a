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
    if store
        .clinics
        .find_one(doc! { "_id": clinic })
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound(format!(
            "clinic {} not found",
            clinic.to_hex()
        )));
    }
    Err(ApiError::Forbidden)
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
