//! The identity service's user events (`user.events`): CloudEvents in either Kafka binding mode
//! whose data is Shoreline's `UserData` (`userid`, `username`, `emails`, …). deletions acts on
//! `users:delete`; migrations keeps each user's address from `users:create` / `users:update`.

use bson::DateTime;
use serde_json::Value;

/// A user was created; the data is the user.
pub const USERS_CREATE: &str = "users:create";
/// A user changed; the data is `{original, updated}`.
pub const USERS_UPDATE: &str = "users:update";
/// A user was deleted; the data is the user (plus `fullName`).
pub const USERS_DELETE: &str = "users:delete";

/// A CloudEvent read from a Kafka record.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    /// `type`.
    pub kind: String,
    /// `time`, epoch milliseconds, when the event has one.
    pub time_ms: Option<i64>,
    /// `data`.
    pub data: Option<Value>,
}

/// A header's value as text.
fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// A record that is no CloudEvent (or one with a `time` that is no timestamp). Processors
/// dead-letter it (`From` into [`crate::streams::ProcessError::Poison`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotAnEvent(String);

fn poison(message: impl Into<String>) -> NotAnEvent {
    NotAnEvent(message.into())
}

/// Reads a CloudEvent from a Kafka record: binary mode (attributes in `ce_*` headers, the value is
/// the data) or structured mode (the value is the whole event as JSON).
///
/// # Errors
/// [`NotAnEvent`] when the record is no CloudEvent, or its `time` is not a timestamp.
pub fn cloud_event(
    headers: &[(String, Vec<u8>)],
    value: Option<&Value>,
) -> Result<CloudEvent, NotAnEvent> {
    let (kind, time, data) = if let Some(version) = header(headers, "ce_specversion") {
        if !version.starts_with('1') {
            return Err(poison(format!(
                "unsupported CloudEvents specversion {version}"
            )));
        }
        let kind = header(headers, "ce_type")
            .ok_or_else(|| poison("binary-mode CloudEvent without a ce_type header"))?;
        (
            kind.to_owned(),
            header(headers, "ce_time").map(str::to_owned),
            value.cloned(),
        )
    } else {
        let event = value
            .and_then(Value::as_object)
            .filter(|event| event.contains_key("specversion"))
            .ok_or_else(|| {
                poison("not a CloudEvent: no ce_specversion header and no structured-mode event")
            })?;
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| poison("structured-mode CloudEvent without a type"))?;
        let time = event.get("time").and_then(Value::as_str).map(str::to_owned);
        (kind.to_owned(), time, event.get("data").cloned())
    };
    let time_ms = time
        .map(|time| {
            DateTime::parse_rfc3339_str(&time)
                .map(|t| t.timestamp_millis())
                .map_err(|e| poison(format!("CloudEvent time {time:?}: {e}")))
        })
        .transpose()?;
    Ok(CloudEvent {
        kind,
        time_ms,
        data: data.filter(|d| !d.is_null()),
    })
}

/// A `UserData`'s user id (Shoreline spells it `userid`; `userId` is accepted too).
pub fn user_id(user: &Value) -> Option<&str> {
    user.get("userid")
        .or_else(|| user.get("userId"))
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
}

/// A `UserData`'s address: its `username` (Tidepool's usernames are email addresses), else its
/// first `emails` entry.
pub fn address(user: &Value) -> Option<&str> {
    user.get("username")
        .and_then(Value::as_str)
        .filter(|a| a.contains('@'))
        .or_else(|| {
            user.get("emails")?
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .find(|a| a.contains('@'))
        })
}

/// The user a `users:*` event is about: the data itself, or `updated` of an update.
pub fn subject(event: &CloudEvent) -> Option<&Value> {
    let data = event.data.as_ref()?;
    if event.kind == USERS_UPDATE {
        data.get("updated")
    } else {
        Some(data)
    }
}

/// The Kafka headers of a CloudEvent in binary mode (the Kafka protocol binding, as go-common's
/// producers write them): `ce_specversion` 1.0, `ce_type`, `ce_id`, `ce_source`, `ce_time`
/// (RFC 3339) and `content-type: application/json` for the JSON data in the value.
pub fn binary_headers(
    kind: &str,
    id: &str,
    source: &str,
    time: &str,
) -> rdkafka::message::OwnedHeaders {
    [
        ("ce_specversion", "1.0"),
        ("ce_type", kind),
        ("ce_id", id),
        ("ce_source", source),
        ("ce_time", time),
        ("content-type", "application/json"),
    ]
    .into_iter()
    .fold(rdkafka::message::OwnedHeaders::new(), |h, (key, value)| {
        h.insert(rdkafka::message::Header {
            key,
            value: Some(value),
        })
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn binary_mode_reads_type_and_time_from_headers_and_the_value_as_data() {
        let headers = vec![
            ("ce_specversion".to_owned(), b"1.0".to_vec()),
            ("ce_type".to_owned(), b"users:delete".to_vec()),
            ("ce_time".to_owned(), b"2026-11-26T10:00:00Z".to_vec()),
        ];
        let data = json!({"userid": "u1", "username": "a@b.c"});
        let event = cloud_event(&headers, Some(&data)).expect("decodes");
        assert_eq!(event.kind, USERS_DELETE);
        assert_eq!(event.time_ms, Some(1_795_687_200_000));
        assert_eq!(subject(&event).and_then(user_id), Some("u1"));
    }

    #[test]
    fn structured_mode_update_names_the_updated_user_and_garbage_is_poison() {
        let update = json!({"specversion": "1.0", "type": "users:update", "id": "1", "source": "s",
            "data": {"original": {"userid": "u1", "username": "old@x.org"},
                     "updated": {"userid": "u1", "username": "new@x.org"}}});
        let event = cloud_event(&[], Some(&update)).expect("decodes");
        assert_eq!(event.time_ms, None);
        assert_eq!(subject(&event).and_then(address), Some("new@x.org"));
        let err = cloud_event(&[], Some(&json!({"hello": 1}))).expect_err("poison");
        assert!(err.to_string().contains("not a CloudEvent"), "{err}");
        let bad_time = json!({"specversion": "1.0", "type": "users:create", "time": "yesterday"});
        assert!(cloud_event(&[], Some(&bad_time)).is_err());
    }

    #[test]
    fn an_address_is_the_username_else_the_first_email() {
        assert_eq!(address(&json!({"username": "a@b.c"})), Some("a@b.c"));
        assert_eq!(
            address(&json!({"username": "legacy-id", "emails": ["x", "c@d.e"]})),
            Some("c@d.e")
        );
        assert_eq!(address(&json!({"userid": "u"})), None);
    }
}
