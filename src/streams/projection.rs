//! Tables a processor keeps itself from stream inputs: a projection of each document (the fields
//! it reads, with their BSON types) under `d/<document key>`, and its secondary index entries
//! under `i/<index key>` → document key. Unlike a declared table input
//! ([`super::Topology::table`]), the processor sees every change, so it can act on one (a
//! trigger) and keep the table in the same step. Also the address book users' CloudEvents keep.

use bson::{Bson, Document};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::processor::{Context, ProcessError};
use super::store::table_key;
use crate::cdc::{self, CdcRecord, Next};
use crate::events;

/// One part of a composite index key: JSON-quoted, so no part is a prefix of another's keys.
pub fn part(text: &str) -> String {
    format!("{}|", serde_json::Value::from(text))
}

/// A projection of a CDC table's documents that a processor keeps, with its index entries.
pub trait Kept: Serialize + DeserializeOwned + PartialEq + Clone {
    /// The projection of a document; `None` when the table does not keep it.
    ///
    /// # Errors
    /// Poison when a field it reads has the wrong shape.
    fn of(document: &Document) -> Result<Option<Self>, ProcessError>;

    /// The fields [`Kept::of`] reads, for applying an update that carries no `fullDocument`.
    fn to_document(&self) -> Document;

    /// Its index keys: one per index of the table the document belongs in (none for a table
    /// without indexes). Index keys of different indexes must not be prefixes of each other's.
    fn indexes(&self, _document_key: &str) -> Vec<String> {
        Vec::new()
    }
}

/// A string field, absent or empty being `None`.
///
/// # Errors
/// Poison when the field is there with another type (the message names the type only: messages
/// reach logs, and values are personal data).
pub fn text(document: &Document, field: &str) -> Result<Option<String>, ProcessError> {
    match document.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::String(s)) if s.is_empty() => Ok(None),
        Some(Bson::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ProcessError::Poison(format!(
            "{field} should be a string, found a {:?}",
            other.element_type()
        ))),
    }
}

/// Applies one change of a kept table in `store`: the projection and its index entry follow the
/// document. Returns the document key and the projection before and after.
///
/// # Errors
/// Poison for a change that cannot be folded or a document of the wrong shape; fatal for an
/// undeclared store.
pub fn follow<K: Kept>(
    ctx: &mut Context<'_>,
    store: &str,
    record: CdcRecord,
) -> Result<(String, Option<K>, Option<K>), ProcessError> {
    let key = table_key(record.document_id()?);
    let document_key = format!("d/{key}");
    let before: Option<K> = ctx.get_json(store, &document_key)?;
    let after = match cdc::next_document(record, || {
        Ok::<_, ProcessError>(before.as_ref().map(K::to_document))
    })? {
        Next::Keep => return Ok((key, before.clone(), before)),
        Next::Gone => None,
        Next::Becomes(document) => K::of(&document)?,
    };
    let old = before.as_ref().map(|k| k.indexes(&key)).unwrap_or_default();
    let new = after.as_ref().map(|k| k.indexes(&key)).unwrap_or_default();
    for gone in old.iter().filter(|o| !new.contains(o)) {
        ctx.delete(store, &format!("i/{gone}"))?;
    }
    for added in new.iter().filter(|n| !old.contains(n)) {
        ctx.write_raw(store, &format!("i/{added}"), key.clone().into_bytes())?;
    }
    match &after {
        Some(next) if Some(next) != before.as_ref() => ctx.put_json(store, &document_key, next)?,
        Some(_) => {}
        None if before.is_some() => ctx.delete(store, &document_key)?,
        None => {}
    }
    Ok((key, before, after))
}

/// A user's address, from the identity service's events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    /// The address (the username).
    pub email: String,
}

/// Keeps users' addresses in `store` (`<part(user)>` → [`Address`]) from `users:create` /
/// `users:update` CloudEvents, and forgets a deleted user. Returns `false` for an event of
/// another type (left alone).
///
/// # Errors
/// Poison for an event that is not a CloudEvent or names no user.
pub fn follow_user_event(
    ctx: &mut Context<'_>,
    store: &str,
    headers: &[(String, Vec<u8>)],
    value: Option<&serde_json::Value>,
) -> Result<bool, ProcessError> {
    let Some(change) = address_change(headers, value)? else {
        return Ok(false);
    };
    keep_address(ctx, store, &change)?;
    Ok(true)
}

/// What a user event says of a user's address: the user and their address (none when the user
/// was deleted, or has none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddressChange {
    /// The user's id.
    pub user: String,
    /// Their address from now on.
    pub email: Option<String>,
}

/// The address change a `users:create` / `users:update` / `users:delete` CloudEvent makes;
/// `None` for an event of another type.
///
/// # Errors
/// Poison for an event that is not a CloudEvent or names no user.
pub fn address_change(
    headers: &[(String, Vec<u8>)],
    value: Option<&serde_json::Value>,
) -> Result<Option<AddressChange>, ProcessError> {
    let event = events::cloud_event(headers, value)?;
    if ![
        events::USERS_CREATE,
        events::USERS_UPDATE,
        events::USERS_DELETE,
    ]
    .contains(&event.kind.as_str())
    {
        return Ok(None);
    }
    let user = events::subject(&event)
        .ok_or_else(|| ProcessError::Poison(format!("{} event without its user", event.kind)))?;
    let id = events::user_id(user)
        .ok_or_else(|| ProcessError::Poison(format!("{} event without a userid", event.kind)))?;
    let email = events::address(user)
        .filter(|_| event.kind != events::USERS_DELETE)
        .map(str::to_owned);
    Ok(Some(AddressChange {
        user: id.to_owned(),
        email,
    }))
}

/// Applies an address change to `store` (see [`follow_user_event`]).
///
/// # Errors
/// The store's.
pub fn keep_address(
    ctx: &mut Context<'_>,
    store: &str,
    change: &AddressChange,
) -> Result<(), ProcessError> {
    let key = part(&change.user);
    match &change.email {
        Some(email) => ctx.put_json(
            store,
            &key,
            &Address {
                email: email.clone(),
            },
        ),
        None => ctx.delete(store, &key),
    }
}
