//! What the processor reads and writes besides CDC events: user-deletion events (CloudEvents in
//! either Kafka binding mode, or a Debezium row of a user table) and archive records.

use bson::{Bson, DateTime, Document, doc};
use clinic::events;
use clinic::streams::ProcessError;
use serde_json::Value;

/// What one record of a user-event input means (as JSON: how it reaches every task, through
/// [`crate::names::USER_CHANGES`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(
    tag = "event",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum UserEvent {
    /// The user is gone: remove every clinic record of theirs.
    Deleted {
        /// The user id.
        user_id: String,
        /// When it happened (the event's `time`, else the record's timestamp), epoch millis.
        at_ms: i64,
    },
    /// The user's address changed (a `users:update` whose `username` changed): their clinic
    /// records take it, as Tidepool's worker has the clinic service do (UpdateClinicUserDetails).
    EmailChanged {
        /// The user id.
        user_id: String,
        /// The new address, trimmed and lower-cased as the API stores addresses.
        email: String,
        /// When it happened, epoch millis (the records' `updatedTime`).
        at_ms: i64,
    },
    /// Any other event (`users:create`, a `users:update` keeping the username, a Debezium
    /// insert…): ignored.
    Ignored {
        /// Its type, for the log.
        kind: String,
    },
}

fn poison(message: impl Into<String>) -> ProcessError {
    ProcessError::Poison(message.into())
}

/// Reads a user event from a Kafka record ([`events::cloud_event`]): a `users:delete` is a
/// deletion, at the event's `time` (else the record's timestamp); a `users:update` whose
/// `username` changed to an address is an address change (Tidepool's worker's condition); any
/// other type is ignored.
///
/// # Errors
/// Poison when the record is no CloudEvent, or a `users:delete` or `users:update` event carries
/// no user id.
pub fn cloud_event(
    headers: &[(String, Vec<u8>)],
    value: Option<&Value>,
    record_ms: Option<i64>,
) -> Result<UserEvent, ProcessError> {
    let event = events::cloud_event(headers, value)?;
    let at_ms = event.time_ms.or(record_ms).unwrap_or_default();
    if event.kind == events::USERS_UPDATE {
        return email_change(&event, at_ms);
    }
    if event.kind != events::USERS_DELETE {
        return Ok(UserEvent::Ignored { kind: event.kind });
    }
    let user_id = event
        .data
        .as_ref()
        .and_then(events::user_id)
        .ok_or_else(|| poison("users:delete event whose data carries no userid"))?;
    Ok(UserEvent::Deleted {
        user_id: user_id.to_owned(),
        at_ms,
    })
}

/// A `users:update` (`{original, updated}`): an address change when `updated.username` is an
/// address other than `original.username`; anything else about the user is ignored.
fn email_change(event: &events::CloudEvent, at_ms: i64) -> Result<UserEvent, ProcessError> {
    let side = |name: &str| event.data.as_ref().and_then(|d| d.get(name));
    let username = |name: &str| {
        side(name)
            .and_then(|u| u.get("username"))
            .and_then(Value::as_str)
            .map(|u| u.trim().to_lowercase())
    };
    let (before, after) = (username("original"), username("updated"));
    let Some(email) = after.filter(|a| a.contains('@') && before.as_ref() != Some(a)) else {
        return Ok(UserEvent::Ignored {
            kind: format!("{} keeping its address", event.kind),
        });
    };
    let user_id = side("updated")
        .and_then(events::user_id)
        .ok_or_else(|| poison("users:update event whose updated user carries no userid"))?;
    Ok(UserEvent::EmailChanged {
        user_id: user_id.to_owned(),
        email,
        at_ms,
    })
}

/// Reads a Debezium row change of a user table (relational envelope: `op`, `before`, `after`,
/// `ts_ms`): `op = d` is a deletion of the user whose id is in `id_column` of `before` (or of the
/// key, when `before` is not captured). A tombstone (no value) is ignored.
///
/// # Errors
/// Poison when the envelope has no `op`, or a delete names no user.
pub fn debezium_row(
    key: Option<&Value>,
    value: Option<&Value>,
    id_column: &str,
    record_ms: Option<i64>,
) -> Result<UserEvent, ProcessError> {
    let Some(value) = value else {
        return Ok(UserEvent::Ignored {
            kind: "tombstone".into(),
        });
    };
    // A Connect `{"schema", "payload"}` wrapper around the envelope or the key.
    let unwrap = |v: &'_ Value| -> Value {
        match v.get("payload") {
            Some(inner) if v.get("schema").is_some() => inner.clone(),
            _ => v.clone(),
        }
    };
    let envelope = unwrap(value);
    let op = envelope
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| poison("Debezium record without op"))?;
    if op != "d" {
        return Ok(UserEvent::Ignored {
            kind: format!("op {op}"),
        });
    }
    let id_of = |row: &Value| -> Option<String> {
        match row.get(id_column)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let user_id = envelope
        .get("before")
        .and_then(id_of)
        .or_else(|| key.map(unwrap).as_ref().and_then(id_of))
        .ok_or_else(|| {
            poison(format!(
                "Debezium delete without {id_column} in before or in the key"
            ))
        })?;
    let at_ms = envelope
        .get("ts_ms")
        .and_then(Value::as_i64)
        .or(record_ms)
        .unwrap_or_default();
    Ok(UserEvent::Deleted { user_id, at_ms })
}

/// What kind of record is archived: names the archive field and the collections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A patient document (`patient_deletions`, field `patient`).
    Patient,
    /// A clinician document (`clinician_deletions`, field `clinician`).
    Clinician,
}

impl Kind {
    /// The archive's field holding the document.
    pub fn field(self) -> &'static str {
        match self {
            Kind::Patient => "patient",
            Kind::Clinician => "clinician",
        }
    }
}

/// The archive record of a deleted document, as the reference service writes it to
/// `<kind>_deletions`: `{_id, deletedTime, <kind>: <the whole document>}`. Its `_id` is the
/// deleted document's own `_id`, so replaying the deletion archives nothing twice.
pub fn archive(kind: Kind, document: &Document, deleted_ms: i64) -> Document {
    let id = document.get("_id").cloned().unwrap_or(Bson::Null);
    doc! {
        "_id": id,
        "deletedTime": DateTime::from_millis(deleted_ms),
        kind.field(): document.clone(),
    }
}

/// A document's clinic id as canonical Extended JSON text (an index key part).
pub fn clinic_key(document: &Document) -> Option<String> {
    document
        .get("clinicId")
        .filter(|c| !matches!(c, Bson::Null))
        .map(clinic::streams::store::table_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn binary_mode_delete_reads_user_and_time_from_headers_and_data() {
        let headers = vec![
            ("ce_specversion".to_owned(), b"1.0".to_vec()),
            ("ce_type".to_owned(), b"users:delete".to_vec()),
            ("ce_time".to_owned(), b"2026-11-26T10:00:00Z".to_vec()),
        ];
        let data = json!({"userid": "u1", "username": "a@b.c"});
        let event = cloud_event(&headers, Some(&data), Some(5)).expect("decodes");
        assert_eq!(
            event,
            UserEvent::Deleted {
                user_id: "u1".into(),
                at_ms: 1_795_687_200_000
            }
        );
    }

    #[test]
    fn structured_mode_other_type_is_ignored_and_garbage_is_poison() {
        let create = json!({"specversion": "1.0", "type": "users:create", "id": "1", "source": "s", "data": {}});
        assert_eq!(
            cloud_event(&[], Some(&create), None).expect("decodes"),
            UserEvent::Ignored {
                kind: "users:create".into()
            }
        );
        // An update that keeps the address is ignored; one that changes it is an address
        // change, which must name its user.
        let update = |updated: serde_json::Value| {
            json!({"specversion": "1.0", "type": "users:update", "id": "1", "source": "s",
                   "data": {"original": {"userid": "u1", "username": "a@b.c"}, "updated": updated}})
        };
        let kept = update(json!({"userid": "u1", "username": "A@B.c", "emailVerified": true}));
        assert!(matches!(
            cloud_event(&[], Some(&kept), Some(7)).expect("decodes"),
            UserEvent::Ignored { .. }
        ));
        let changed = update(json!({"userid": "u1", "username": "New@B.c"}));
        assert_eq!(
            cloud_event(&[], Some(&changed), Some(7)).expect("decodes"),
            UserEvent::EmailChanged {
                user_id: "u1".into(),
                email: "new@b.c".into(),
                at_ms: 7
            }
        );
        let nobody = update(json!({"username": "new@b.c"}));
        assert!(cloud_event(&[], Some(&nobody), None).is_err());
        let err = cloud_event(&[], Some(&json!({"hello": 1})), None).expect_err("poison");
        assert!(matches!(err, ProcessError::Poison(m) if m.contains("not a CloudEvent")));
        let no_user =
            json!({"specversion": "1.0", "type": "users:delete", "data": {"username": "x"}});
        assert!(cloud_event(&[], Some(&no_user), None).is_err());
    }

    #[test]
    fn debezium_delete_takes_the_id_from_before_or_the_key() {
        let value =
            json!({"before": {"id": "u2", "email": "x"}, "after": null, "op": "d", "ts_ms": 7});
        assert_eq!(
            debezium_row(None, Some(&value), "id", None).expect("decodes"),
            UserEvent::Deleted {
                user_id: "u2".into(),
                at_ms: 7
            }
        );
        let bare = json!({"schema": {}, "payload": {"before": null, "op": "d", "ts_ms": 8}});
        let key = json!({"id": "u3"});
        assert_eq!(
            debezium_row(Some(&key), Some(&bare), "id", None).expect("decodes"),
            UserEvent::Deleted {
                user_id: "u3".into(),
                at_ms: 8
            }
        );
        let update = json!({"before": null, "after": {"id": "u2"}, "op": "u"});
        assert!(matches!(
            debezium_row(None, Some(&update), "id", None).expect("decodes"),
            UserEvent::Ignored { .. }
        ));
    }
}
