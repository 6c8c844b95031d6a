//! How documents are stored in stores: BSON behind a tag byte, the `_id` left to the key; and
//! the compact form of document keys that indexes (in memory only) use.

use bson::{Bson, Document, RawDocument};

use super::store::table_key;

/// The first byte of a stored document: BSON follows. Values written before were canonical
/// Extended JSON text, which starts with `{`, so every form reads (a changelog written by an
/// earlier version restores as it is).
const BSON_DOCUMENT: u8 = 0;
/// The first byte of a stored document whose `_id` is left out: BSON of the other fields
/// follows, and the `_id` is the one the entry's key names ([`table_key`]).
const BSON_WITHOUT_ID: u8 = 1;

/// Stored bytes that are no stored document (nor the Extended JSON text earlier versions stored),
/// or a document field that does not read. The message names where, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoredError(String);

/// What a reader below (bson, Extended JSON) said, as a [`StoredError`].
fn unreadable(error: impl std::fmt::Display) -> StoredError {
    StoredError(error.to_string())
}

/// The stored form of `document` under `key`: a tag byte, then the document as BSON, without
/// its `_id` when `key` is that id's [`table_key`] (as in every table: the key holds it already).
/// BSON over Extended JSON text: an ObjectId is 12 bytes instead of 34, a date 8 instead of ~40
/// (the processors benchmark's patient document: 278 bytes instead of 420), it is written and
/// read without a text parser, and single fields are read in place ([`document_fields`]).
pub fn document_value(key: &str, document: &Document) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(256);
    bytes.push(BSON_DOCUMENT);
    document
        .to_writer(&mut bytes)
        .expect("BUG: a bson Document always serializes into a Vec");
    // MongoDB puts `_id` first; cutting its element out of the bytes spares a copy of the rest.
    if let Some((Some(id), length)) = first_element(&bytes[1..], "_id")
        && table_key(&id) == key
    {
        let end = 1 + 4 + length;
        bytes.drain(1 + 4..end);
        let total = i32::try_from(bytes.len() - 1).expect("BUG: a BSON document under 2 GiB");
        bytes[1..5].copy_from_slice(&total.to_le_bytes());
        bytes[0] = BSON_WITHOUT_ID;
    }
    bytes
}

/// The value and the whole length (type byte, name, value) of `bson`'s first element, when it
/// is named `name`.
fn first_element(bson: &[u8], name: &str) -> Option<(Option<Bson>, usize)> {
    let element = RawDocument::from_bytes(bson)
        .ok()?
        .iter_elements()
        .next()?
        .ok()?;
    (element.key() == name).then(|| {
        let value = element.value().ok().and_then(|v| Bson::try_from(v).ok());
        (value, 1 + name.len() + 1 + element.len())
    })
}

/// The BSON of a document stored without its `_id`, with the `_id` `key` names put back first.
fn with_id(key: &str, rest: &[u8]) -> Result<Vec<u8>, StoredError> {
    let id = crate::cdc::extjson::parse_value(key)
        .map_err(|e| StoredError(format!("key {key}: {e}")))?;
    let mut head = Vec::new();
    bson::doc! {"_id": id}
        .to_writer(&mut head)
        .map_err(unreadable)?;
    if rest.len() < 5 || head.len() < 5 {
        return Err(StoredError("a stored document shorter than 5 bytes".into()));
    }
    // Both documents' elements, between one length and one terminating zero.
    let mut bytes = Vec::with_capacity(head.len() + rest.len());
    let total = i32::try_from(head.len() + rest.len() - 5).map_err(unreadable)?;
    bytes.extend_from_slice(&total.to_le_bytes());
    bytes.extend_from_slice(&head[4..head.len() - 1]);
    bytes.extend_from_slice(&rest[4..]);
    Ok(bytes)
}

/// A document read back from its stored form under `key` ([`document_value`], or the Extended
/// JSON text earlier versions stored).
///
/// # Errors
/// When the bytes are none of those.
pub fn read_document(key: &str, bytes: &[u8]) -> Result<Document, StoredError> {
    match bytes.split_first() {
        Some((&BSON_DOCUMENT, bson)) => Document::from_reader(bson).map_err(unreadable),
        Some((&BSON_WITHOUT_ID, rest)) => {
            Document::from_reader(&with_id(key, rest)?[..]).map_err(unreadable)
        }
        _ => std::str::from_utf8(bytes)
            .map_err(unreadable)
            .and_then(|text| crate::cdc::extjson::parse_document(text).map_err(unreadable)),
    }
}

/// The top-level `fields` of a document stored under `key` (those it has), without building the
/// rest: BSON is walked in place, Extended JSON text skips what it does not keep.
///
/// # Errors
/// When the bytes are no stored document, or a kept field's value is broken.
pub fn document_fields(key: &str, bytes: &[u8], fields: &[&str]) -> Result<Document, StoredError> {
    let raw_fields = |bson: &[u8]| -> Result<Document, StoredError> {
        let raw = RawDocument::from_bytes(bson).map_err(unreadable)?;
        let mut document = Document::new();
        for field in fields {
            if let Some(value) = raw.get(field).map_err(unreadable)? {
                let value = Bson::try_from(value).map_err(unreadable)?;
                document.insert(*field, value);
            }
        }
        Ok(document)
    };
    match bytes.split_first() {
        Some((&BSON_DOCUMENT, bson)) => raw_fields(bson),
        Some((&BSON_WITHOUT_ID, rest)) if fields.contains(&"_id") => {
            raw_fields(&with_id(key, rest)?)
        }
        Some((&BSON_WITHOUT_ID, rest)) => raw_fields(rest),
        _ => std::str::from_utf8(bytes)
            .map_err(unreadable)
            .and_then(|text| {
                crate::cdc::extjson::parse_document_fields(text, Some(fields)).map_err(unreadable)
            }),
    }
}

/// An ObjectId's [`table_key`], `{"$oid":"<24 hex digits>"}`, as its 24 hex digits; any other
/// key as it is. For index keys, which live in memory only and are rebuilt on restore: 9 bytes
/// fewer per ObjectId. [`expand_key`] reverses it: no other table key is 24 bare hex digits
/// (canonical Extended JSON quotes strings and wraps numbers in objects), and a compact key is,
/// like a table key, never a prefix of another followed by `|`.
pub fn compact_key(table_key: &str) -> &str {
    table_key
        .strip_prefix(r#"{"$oid":""#)
        .and_then(|rest| rest.strip_suffix(r#""}"#))
        .filter(|hex| is_object_id_hex(hex))
        .unwrap_or(table_key)
}

/// The table key a [`compact_key`] came from.
pub fn expand_key(compact: &str) -> std::borrow::Cow<'_, str> {
    if is_object_id_hex(compact) {
        format!(r#"{{"$oid":"{compact}"}}"#).into()
    } else {
        compact.into()
    }
}

fn is_object_id_hex(text: &str) -> bool {
    // Lower case, as `table_key` writes it, so a key compacts and expands to itself.
    text.len() == 24 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use bson::{DateTime, doc, oid::ObjectId};

    use super::*;

    #[test]
    fn documents_read_back_as_written_with_or_without_their_id() {
        let oid = ObjectId::parse_str("6750c0c0c0c0c0c0c0c0c0c1").expect("hex");
        let cases = [
            // Kept under its own id: stored without it.
            (
                table_key(&Bson::ObjectId(oid)),
                doc! {"_id": oid, "userId": "u1", "n": 1},
                1,
            ),
            (
                r#""p-7""#.to_owned(),
                doc! {"_id": "p-7", "tags": [1, 2]},
                1,
            ),
            // Under another key, without an id, or with the id later: stored whole.
            ("other".to_owned(), doc! {"_id": oid, "userId": "u1"}, 0),
            ("other".to_owned(), doc! {"userId": "u1"}, 0),
            (
                table_key(&Bson::ObjectId(oid)),
                doc! {"userId": "u1", "_id": oid},
                0,
            ),
        ];
        for (key, document, tag) in cases {
            let value = document_value(&key, &document);
            assert_eq!(value[0], tag, "{document}");
            assert_eq!(read_document(&key, &value).expect("reads"), document);
            let fields =
                document_fields(&key, &value, &["_id", "userId", "absent"]).expect("reads");
            let expected: Document = document
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), "_id" | "userId"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let sorted = |d: Document| {
                let mut pairs: Vec<_> = d.into_iter().collect();
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
                pairs
            };
            assert_eq!(sorted(fields), sorted(expected), "{document}");
        }
    }

    #[test]
    fn extended_json_text_of_earlier_versions_still_reads() {
        let text = br#"{"_id": {"$oid": "6750c0c0c0c0c0c0c0c0c0c1"}, "createdTime": {"$date": {"$numberLong": "5"}}, "userId": "u1"}"#;
        let key = r#"{"$oid":"6750c0c0c0c0c0c0c0c0c0c1"}"#;
        let document = read_document(key, text).expect("reads");
        assert_eq!(
            document.get_datetime("createdTime"),
            Ok(&DateTime::from_millis(5))
        );
        let fields = document_fields(key, text, &["userId"]).expect("reads");
        assert_eq!(fields, doc! {"userId": "u1"});
        assert!(read_document(key, b"\x01\x02").is_err());
        assert!(read_document(key, b"garbage").is_err());
    }

    #[test]
    fn a_patient_document_is_a_third_smaller_than_its_extended_json() {
        // The processors benchmark's patient document.
        let oid = ObjectId::new();
        let document = doc! {
            "_id": oid, "clinicId": ObjectId::new(), "userId": "user00012345",
            "fullName": "Patient Number 12345", "birthDate": "1990-04-05",
            "email": "patient12345@example.org", "mrn": "MRN12345",
            "permissions": { "view": {}, "upload": {} }, "tags": [ObjectId::new()],
            "createdTime": DateTime::from_millis(1_700_000_012_345),
            "updatedTime": DateTime::from_millis(1_700_000_012_345),
        };
        let text =
            crate::cdc::extjson::to_string(&document, crate::cdc::extjson::Dialect::Canonical);
        let value = document_value(&table_key(&Bson::ObjectId(oid)), &document);
        assert_eq!((value.len(), text.len()), (278, 420));
    }

    #[test]
    fn object_id_keys_compact_to_their_hex_and_back_and_others_stay() {
        let oid = r#"{"$oid":"6750c0c0c0c0c0c0c0c0c0c1"}"#;
        assert_eq!(compact_key(oid), "6750c0c0c0c0c0c0c0c0c0c1");
        assert_eq!(expand_key(compact_key(oid)), oid);
        for other in [
            r#""6750c0c0c0c0c0c0c0c0c0c1""#,
            r#"{"$oid":"6750C0C0C0C0C0C0C0C0C0C1"}"#,
            r#"{"$numberInt":"5"}"#,
            "null",
        ] {
            assert_eq!(compact_key(other), other);
            assert_eq!(expand_key(other), other);
        }
    }
}
