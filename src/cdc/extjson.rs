//! MongoDB Extended JSON in the three dialects CDC producers use, to and from typed BSON.
//!
//! - **canonical** (`{"$numberLong": "5"}`, `{"$date": {"$numberLong": "…"}}`): type-preserving,
//!   the source connector's `ExtendedJson` formatter;
//! - **relaxed** (plain numbers, `{"$date": "2024-01-01T00:00:00Z"}`): `SimplifiedJson`, and what
//!   most tools print;
//! - **legacy** strict mode (`{"$date": <millis>}`, plain 32-bit ints and doubles,
//!   `{"$numberLong": "…"}`): the connector's default `DefaultJson` formatter.
//!
//! Parsing accepts all three (and any mix) through the `bson` crate's Extended JSON reader, so
//! ObjectIds, dates, 64-bit integers and the rest stay typed.

use bson::{Bson, Document};
use serde_json::{Map, Value};

/// Which dialect [`to_string`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Canonical Extended JSON v2.
    Canonical,
    /// Relaxed Extended JSON v2.
    Relaxed,
    /// The legacy strict mode of the Java driver (`JsonMode.STRICT`), `DefaultJson`'s output.
    Legacy,
}

/// Why a JSON text is not an Extended JSON document.
#[derive(Debug, thiserror::Error)]
pub enum ExtJsonError {
    /// The text is not JSON.
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but not valid Extended JSON (a malformed `$oid`, `$date`, …).
    #[error("invalid Extended JSON: {0}")]
    ExtJson(#[from] bson::extjson::de::Error),
    /// Valid, but not a document where a document is required.
    #[error("expected a JSON object, found {0}")]
    NotADocument(&'static str),
}

/// A document as canonical Extended JSON text: what
/// `serde_json::to_string(&Bson::Document(document).into_canonical_extjson())` writes, written
/// without building the JSON tree first (every sink record is one: a third of its cost went to
/// that tree).
pub fn canonical_text(document: &Document) -> String {
    let mut out = Vec::with_capacity(256);
    write_document(&mut out, document);
    String::from_utf8(out).expect("BUG: JSON text is UTF-8")
}

/// Any value as canonical Extended JSON text, as [`canonical_text`] writes it (store and sink
/// keys are made of ids per record).
pub fn canonical_value_text(value: &Bson) -> String {
    let mut out = Vec::with_capacity(64);
    write_canonical(&mut out, value);
    String::from_utf8(out).expect("BUG: JSON text is UTF-8")
}

fn write_document(out: &mut Vec<u8>, document: &Document) {
    out.push(b'{');
    for (n, (key, value)) in document.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write_json(out, key.as_str());
        out.push(b':');
        write_canonical(out, value);
    }
    out.push(b'}');
}

/// The types documents mostly hold are written here; the rest (doubles among them, whose text
/// has its own rules) the way `bson` renders them.
fn write_canonical(out: &mut Vec<u8>, value: &Bson) {
    use std::io::Write;
    let written = match value {
        Bson::Document(document) => {
            write_document(out, document);
            Ok(())
        }
        Bson::Array(items) => {
            out.push(b'[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_canonical(out, item);
            }
            out.push(b']');
            Ok(())
        }
        Bson::String(text) => {
            write_json(out, text.as_str());
            Ok(())
        }
        Bson::Boolean(b) => write!(out, "{b}"),
        Bson::Null => write!(out, "null"),
        Bson::Int32(i) => write!(out, r#"{{"$numberInt":"{i}"}}"#),
        Bson::Int64(i) => write!(out, r#"{{"$numberLong":"{i}"}}"#),
        Bson::DateTime(at) => write!(
            out,
            r#"{{"$date":{{"$numberLong":"{}"}}}}"#,
            at.timestamp_millis()
        ),
        Bson::ObjectId(oid) => {
            let mut hex = [0u8; 24];
            hex::encode_to_slice(oid.bytes(), &mut hex).expect("BUG: 12 bytes are 24 hex digits");
            out.extend_from_slice(br#"{"$oid":""#);
            out.extend_from_slice(&hex);
            out.extend_from_slice(br#""}"#);
            Ok(())
        }
        other => {
            write_json(out, &other.clone().into_canonical_extjson());
            Ok(())
        }
    };
    written.expect("BUG: writing to memory does not fail");
}

fn write_json(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    serde_json::to_writer(out, value).expect("BUG: JSON serializes to memory");
}

/// Parses an Extended JSON text that must hold a document.
pub fn parse_document(text: &str) -> Result<Document, ExtJsonError> {
    parse_document_fields(text, None)
}

/// Converts already-parsed JSON that must be an object into a typed document.
pub fn document_from_value(mut value: Value) -> Result<Document, ExtJsonError> {
    upgrade_legacy(&mut value);
    match value {
        Value::Object(map) => Ok(to_document(map)?),
        other => Err(ExtJsonError::NotADocument(json_kind(&other))),
    }
}

/// The `bson` crate's Extended JSON reader, with a shortcut: it asks every JSON object for each
/// of ~15 `$` keys (a hash lookup each) before taking it as a plain document, which most of a
/// document's objects are. An object without a `$` key is built here, as the reader would build
/// it; an object with one, and every scalar, still goes to the reader.
fn to_bson(value: Value) -> Result<Bson, bson::extjson::de::Error> {
    match value {
        Value::Object(map) if !map.keys().any(|key| key.starts_with('$')) => {
            to_document(map).map(Bson::Document)
        }
        Value::Array(items) => items
            .into_iter()
            .map(to_bson)
            .collect::<Result<_, _>>()
            .map(Bson::Array),
        // The commonest typed value (ids, references): one key, read here; the reader would
        // look up each of its keys first. A malformed one still goes to the reader, for its error.
        Value::Object(map)
            if map.len() == 1
                && let Some(Value::String(hex)) = map.get("$oid")
                && let Ok(oid) = bson::oid::ObjectId::parse_str(hex) =>
        {
            Ok(Bson::ObjectId(oid))
        }
        other => Bson::try_from(other),
    }
}

/// A JSON object as a document, its values through [`to_bson`] (the reader too takes an
/// object it reads as a document key by key, whatever the keys).
fn to_document(map: Map<String, Value>) -> Result<Document, bson::extjson::de::Error> {
    let mut document = Document::new();
    for (key, value) in map {
        document.insert(key, to_bson(value)?);
    }
    Ok(document)
}

/// Parses an Extended JSON text that must hold a document, keeping only the top-level `fields`
/// (all of them when `None`). The other fields are skipped by the JSON reader without being
/// built: a processor that reads three fields of a document pays for three values, not for the
/// whole document (a bson `Document` is an index map whose every key is hashed). Each kept
/// field is read by [`field_value`]: plain JSON straight into BSON.
///
/// # Errors
/// The text is not a JSON object, or a kept field is not valid Extended JSON. A skipped field
/// is only checked to be JSON.
pub fn parse_document_fields(
    text: &str,
    fields: Option<&[&str]>,
) -> Result<Document, ExtJsonError> {
    let mut reader = serde_json::Deserializer::from_str(text);
    let kept = serde::de::DeserializeSeed::deserialize(Only(fields), &mut reader)
        .and_then(|kept| reader.end().map(|()| kept));
    let kept = match kept {
        Ok(kept) if !kept.iter().any(|(key, _)| key.starts_with('$')) => kept,
        // Not JSON or not an object (the general way says which), or an object that may be a
        // legacy form to rewrite (`upgrade_legacy`): the general way.
        _ => return document_from_value_fields(serde_json::from_str(text)?, fields),
    };
    let mut document = Document::new();
    for (key, raw) in kept {
        document.insert(key.into_owned(), field_value(raw.get())?);
    }
    Ok(document)
}

/// As [`document_from_value`], keeping only the top-level `fields` (all when `None`).
///
/// # Errors
/// As [`document_from_value`].
pub fn document_from_value_fields(
    mut value: Value,
    fields: Option<&[&str]>,
) -> Result<Document, ExtJsonError> {
    if let (Some(fields), Value::Object(map)) = (fields, &mut value) {
        map.retain(|key, _| fields.contains(&key.as_str()));
    }
    document_from_value(value)
}

/// An Extended JSON value's text (a document's field, or any value), as [`bson_from_value`]
/// reads it once parsed. Every
/// Extended JSON form has a `$` key, so a text without a `$` is plain JSON and is read straight
/// into BSON ([`Plain`]), with no `serde_json::Value` between; the typed values documents hold
/// most are read directly too ([`Typed`]); anything else with a `$` (also a string holding one)
/// goes the general way.
fn field_value(text: &str) -> Result<Bson, ExtJsonError> {
    if !text.contains('$') {
        return Ok(serde_json::from_str::<Plain>(text)?.0);
    }
    let mut reader = serde_json::Deserializer::from_str(text);
    if let Ok(typed) = serde::Deserializer::deserialize_map(&mut reader, Typed)
        && reader.end().is_ok()
    {
        return Ok(typed);
    }
    bson_from_value(serde_json::from_str(text)?)
}

/// An object of one key that the `bson` reader takes as `$oid`, `$numberLong`, `$numberInt`,
/// `$timestamp` or `$date` (canonical `{"$numberLong": …}`, relaxed RFC 3339 text or legacy milliseconds), read
/// as its models read them. Anything else, and anything they would refuse, is an error here:
/// [`field_value`] then asks the reader itself, for its answer or its error.
struct Typed;

impl<'de> serde::de::Visitor<'de> for Typed {
    type Value = Bson;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a one-key typed value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Bson, A::Error> {
        use serde::de::Error as _;
        let refused = |what: &dyn std::fmt::Display| A::Error::custom(what.to_string());
        let Some(Key(key)) = map.next_key()? else {
            return Err(refused(&"an empty object"));
        };
        let value = match key.as_ref() {
            "$oid" => {
                let Key(hex) = map.next_value()?;
                Bson::ObjectId(
                    bson::oid::ObjectId::parse_str(hex.as_ref()).map_err(|e| refused(&e))?,
                )
            }
            "$numberLong" => {
                let Key(digits) = map.next_value()?;
                Bson::Int64(digits.parse().map_err(|e| refused(&e))?)
            }
            "$numberInt" => {
                let Key(digits) = map.next_value()?;
                Bson::Int32(digits.parse().map_err(|e| refused(&e))?)
            }
            "$date" => Bson::DateTime(map.next_value::<DateBody>()?.0),
            "$timestamp" => {
                let TimestampBody { t, i } = map.next_value()?;
                Bson::Timestamp(bson::Timestamp {
                    time: t,
                    increment: i,
                })
            }
            _ => return Err(refused(&"not a typed value read here")),
        };
        if map.next_key::<serde::de::IgnoredAny>()?.is_some() {
            return Err(refused(&"more than one key"));
        }
        Ok(value)
    }
}

/// The value of `$timestamp`, as the `bson` reader's model reads it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TimestampBody {
    t: u32,
    i: u32,
}

/// The value of `$date` in its three forms, as the `bson` reader's untagged model reads them.
struct DateBody(bson::DateTime);

impl<'de> serde::Deserialize<'de> for DateBody {
    fn deserialize<D: serde::Deserializer<'de>>(reader: D) -> Result<Self, D::Error> {
        reader.deserialize_any(DateBodyVisitor).map(DateBody)
    }
}

struct DateBodyVisitor;

impl<'de> serde::de::Visitor<'de> for DateBodyVisitor {
    type Value = bson::DateTime;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a date's milliseconds, {\"$numberLong\": …} or RFC 3339 text")
    }

    fn visit_i64<E>(self, millis: i64) -> Result<bson::DateTime, E> {
        Ok(bson::DateTime::from_millis(millis))
    }

    fn visit_u64<E: serde::de::Error>(self, millis: u64) -> Result<bson::DateTime, E> {
        i64::try_from(millis)
            .map(bson::DateTime::from_millis)
            .map_err(E::custom)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<bson::DateTime, E> {
        bson::DateTime::parse_rfc3339_str(text).map_err(E::custom)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<bson::DateTime, A::Error> {
        use serde::de::Error as _;
        let Some(Key(key)) = map.next_key()? else {
            return Err(A::Error::custom("an empty object"));
        };
        if key != "$numberLong" {
            return Err(A::Error::custom("not {\"$numberLong\": …}"));
        }
        let Key(digits) = map.next_value()?;
        let millis: i64 = digits.parse().map_err(A::Error::custom)?;
        if map.next_key::<serde::de::IgnoredAny>()?.is_some() {
            return Err(A::Error::custom("more than one key"));
        }
        Ok(bson::DateTime::from_millis(millis))
    }
}

/// JSON without Extended JSON forms, read into BSON as the `bson` crate's reader reads plain
/// JSON: integers as Int32 when they fit, else Int64, else (beyond `i64`) Double; other numbers
/// Double; objects as documents (a repeated key keeps its first place and its last value).
struct Plain(Bson);

impl<'de> serde::Deserialize<'de> for Plain {
    fn deserialize<D: serde::Deserializer<'de>>(reader: D) -> Result<Self, D::Error> {
        reader.deserialize_any(PlainVisitor).map(Plain)
    }
}

struct PlainVisitor;

impl<'de> serde::de::Visitor<'de> for PlainVisitor {
    type Value = Bson;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Bson, E> {
        Ok(Bson::Boolean(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Bson, E> {
        Ok(i32::try_from(value).map_or(Bson::Int64(value), Bson::Int32))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Bson, E> {
        #[allow(clippy::cast_precision_loss)] // as serde_json's `Number::as_f64`
        Ok(
            i64::try_from(value).map_or(Bson::Double(value as f64), |v| {
                i32::try_from(v).map_or(Bson::Int64(v), Bson::Int32)
            }),
        )
    }

    fn visit_f64<E>(self, value: f64) -> Result<Bson, E> {
        Ok(Bson::Double(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Bson, E> {
        Ok(Bson::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Bson, E> {
        Ok(Bson::String(value))
    }

    fn visit_unit<E>(self) -> Result<Bson, E> {
        Ok(Bson::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<Bson, A::Error> {
        let mut array = Vec::with_capacity(items.size_hint().unwrap_or(0));
        while let Some(Plain(item)) = items.next_element()? {
            array.push(item);
        }
        Ok(Bson::Array(array))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<Bson, A::Error> {
        let mut document = Document::new();
        while let Some((key, Plain(value))) = entries.next_entry::<String, Plain>()? {
            document.insert(key, value);
        }
        Ok(Bson::Document(document))
    }
}

/// A JSON object's keys and the text of their values, keeping only some keys (all when `None`);
/// the values of the others are skipped (`IgnoredAny`), never built.
struct Only<'a>(Option<&'a [&'a str]>);

/// An object key, borrowed from the text when it has no escapes.
#[derive(serde::Deserialize)]
struct Key<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);

/// The kept keys with their values' text, in order.
type KeptText<'de> = Vec<(std::borrow::Cow<'de, str>, &'de serde_json::value::RawValue)>;

impl<'de> serde::de::DeserializeSeed<'de> for Only<'_> {
    type Value = KeptText<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, reader: D) -> Result<Self::Value, D::Error> {
        reader.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Only<'_> {
    type Value = KeptText<'de>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON object (a document)")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut access: A,
    ) -> Result<Self::Value, A::Error> {
        let mut kept = Vec::with_capacity(self.0.map_or(16, <[_]>::len));
        while let Some(Key(key)) = access.next_key()? {
            if self.0.is_none_or(|fields| fields.contains(&key.as_ref())) {
                kept.push((key, access.next_value()?));
            } else {
                access.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(kept)
    }
}

/// Parses any Extended JSON value (document, array, scalar).
pub fn parse_value(text: &str) -> Result<Bson, ExtJsonError> {
    field_value(text)
}

/// Converts already-parsed JSON of any shape into a typed value.
pub fn bson_from_value(mut value: Value) -> Result<Bson, ExtJsonError> {
    upgrade_legacy(&mut value);
    Ok(to_bson(value)?)
}

/// Rewrites the legacy forms the `bson` reader does not accept into their v2 equivalents:
/// `{"$binary": "<base64>", "$type": "<hex>"}` and `{"$regex": "…", "$options": "…"}`, both of
/// which the Java driver's strict mode (the connector's `DefaultJson`) writes. In place: the
/// objects that need no rewrite (nearly all) are not rebuilt, which per change event cost a new
/// map, its keys hashed again, for every object of the document.
fn upgrade_legacy(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(upgrade_legacy),
        Value::Object(map) => {
            if map.len() == 2 {
                let pair = |a: &str, b: &str| match (map.get(a), map.get(b)) {
                    (Some(Value::String(x)), Some(Value::String(y))) => {
                        Some((x.clone(), y.clone()))
                    }
                    _ => None,
                };
                if let Some((base64, sub_type)) = pair("$binary", "$type") {
                    *value =
                        serde_json::json!({ "$binary": { "base64": base64, "subType": sub_type } });
                    return;
                }
                if let Some((pattern, options)) = pair("$regex", "$options") {
                    *value = serde_json::json!({ "$regularExpression": { "pattern": pattern, "options": options } });
                    return;
                }
            }
            map.values_mut().for_each(upgrade_legacy);
        }
        _ => {}
    }
}

/// Renders a document as JSON in the given dialect.
pub fn to_value(document: &Document, dialect: Dialect) -> Value {
    bson_to_value(Bson::Document(document.clone()), dialect)
}

/// Renders a document as JSON text in the given dialect.
pub fn to_string(document: &Document, dialect: Dialect) -> String {
    match dialect {
        Dialect::Canonical => canonical_text(document),
        Dialect::Relaxed | Dialect::Legacy => to_value(document, dialect).to_string(),
    }
}

/// Renders any BSON value as JSON in the given dialect.
pub fn bson_to_value(value: Bson, dialect: Dialect) -> Value {
    match dialect {
        Dialect::Canonical => value.into_canonical_extjson(),
        Dialect::Relaxed => value.into_relaxed_extjson(),
        Dialect::Legacy => canonical_to_legacy(value.into_canonical_extjson()),
    }
}

/// Legacy strict mode differs from canonical v2 in three places: 32-bit integers and finite
/// doubles are plain numbers, and dates are `{"$date": <millis>}`.
fn canonical_to_legacy(value: Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(canonical_to_legacy).collect()),
        Value::Object(map) => {
            if let Some(plain) = legacy_scalar(&map) {
                return plain;
            }
            Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, canonical_to_legacy(v)))
                    .collect(),
            )
        }
        other => other,
    }
}

fn legacy_scalar(map: &Map<String, Value>) -> Option<Value> {
    if map.len() != 1 {
        return None;
    }
    let (key, inner) = map.iter().next()?;
    match (key.as_str(), inner) {
        ("$numberInt", Value::String(s)) => s.parse::<i32>().ok().map(Value::from),
        ("$numberDouble", Value::String(s)) => s
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        ("$date", Value::Object(date)) => match date.get("$numberLong") {
            Some(Value::String(ms)) => ms
                .parse::<i64>()
                .ok()
                .map(|ms| serde_json::json!({ "$date": ms })),
            _ => None,
        },
        _ => None,
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use bson::oid::ObjectId;
    use bson::{DateTime, doc};

    use super::*;

    #[test]
    fn the_shortcut_reads_every_value_as_the_bson_reader_does() {
        let text = r#"{"_id": {"$oid": "65f000000000000000000001"}, "n": 5, "big": 5000000000,
            "x": 1.5, "s": "t", "none": null, "yes": true,
            "plain": {"a": [1, {"b": {"$numberLong": "7"}}, [{"$date": {"$numberLong": "9"}}]]},
            "unknown": {"$foo": 1, "c": {"d": 2}}, "mixed": {"$oid": "65f000000000000000000002"},
            "bad": {"inner": {"$date": "not a date"}}, "empty": {}, "list": []}"#;
        let value: Value = serde_json::from_str(text).expect("JSON");
        let Value::Object(map) = value.clone() else {
            panic!("an object")
        };
        for (key, field) in map {
            let ours = to_bson(field.clone()).map_err(|e| e.to_string());
            let theirs = Bson::try_from(field).map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{key}");
        }
        assert!(to_bson(value).is_err(), "the broken date");
    }

    #[test]
    fn a_field_reads_as_the_general_way_reads_it() {
        let texts = [
            "5",
            "-5",
            "-0",
            "0.0",
            "1.5",
            "2147483647",
            "2147483648",
            "-2147483649",
            "9223372036854775807",
            "18446744073709551615",
            "1e400",
            "null",
            "true",
            r#""a\u00e9\"b""#,
            r#""costs $5""#,
            r#"[1, [2, {}], {"a": null}]"#,
            r#"{"a": 1, "a": 2, "b": {"c": []}}"#,
            r#"{"$oid": "65f000000000000000000001"}"#,
            r#"{ "$oid" : "65f000000000000000000001" }"#,
            r#"{"$oid": "not hex"}"#,
            r#"{"$oid": 5}"#,
            r#"{"$numberLong": "9000000000"}"#,
            r#"{"$numberLong": "+07"}"#,
            r#"{"$numberLong": "9223372036854775808"}"#,
            r#"{"$numberLong": 5}"#,
            r#"{"$numberInt": "-7"}"#,
            r#"{"$numberInt": "2147483648"}"#,
            r#"{"$date": {"$numberLong": "1700000000123"}}"#,
            r#"{"$date": {"$numberLong": "x"}}"#,
            r#"{"$date": {"$numberLong": "1", "y": 2}}"#,
            r#"{"$date": {}}"#,
            r#"{"$date": 1700000000123}"#,
            r#"{"$date": -5}"#,
            r#"{"$date": 18446744073709551615}"#,
            r#"{"$date": 1.5}"#,
            r#"{"$date": "2024-01-02T03:04:05.678Z"}"#,
            r#"{"$date": "2024-01-02T03:04:05+01:00"}"#,
            r#"{"$date": "yesterday"}"#,
            r#"{"$date": {"$numberLong": "1"}, "x": 1}"#,
            r#"{"$timestamp": {"t": 1700000000, "i": 3}}"#,
            r#"{"$timestamp": {"i": 3, "t": 1}}"#,
            r#"{"$timestamp": {"t": -1, "i": 3}}"#,
            r#"{"$timestamp": {"t": 4294967296, "i": 3}}"#,
            r#"{"$timestamp": {"t": 1, "i": 3, "x": 0}}"#,
            r#"{"$timestamp": {"t": 1}}"#,
            r#"{"$timestamp": "1"}"#,
            r#"{}"#,
            r#"{"$oid": "65f000000000000000000001", "x": 1}"#,
            r#"{"$date": {"$numberLong": "9"}}"#,
            r#"{"$binary": "AQI=", "$type": "00"}"#,
            r#"{"n": {"$numberLong": "7"}, "m": 1}"#,
            r#"{"$foo": 1}"#,
        ];
        for text in texts {
            let ours = field_value(text).map_err(|e| e.to_string());
            let general = serde_json::from_str(text)
                .map_err(ExtJsonError::from)
                .and_then(bson_from_value)
                .map_err(|e| e.to_string());
            assert_eq!(ours, general, "{text}");
        }
    }

    #[test]
    fn a_whole_document_reads_as_the_general_way_reads_it() {
        let mut texts: Vec<String> = [Dialect::Canonical, Dialect::Relaxed, Dialect::Legacy]
            .into_iter()
            .map(|dialect| to_string(&sample(), dialect))
            .collect();
        texts.push(r#"{"$binary": "AQI=", "$type": "00"}"#.into());
        texts.push(r#"{"a": 1, "$b": 2}"#.into());
        texts.push(r#"{"a": {"$date": "not a date"}, "b": 1}"#.into());
        texts.push(r#"{"a": 1, "a": {"$oid": "65f000000000000000000001"}}"#.into());
        for text in &texts {
            let ours = parse_document(text).map_err(|e| e.to_string());
            let general = serde_json::from_str(text)
                .map_err(ExtJsonError::from)
                .and_then(document_from_value)
                .map_err(|e| e.to_string());
            assert_eq!(ours, general, "{text}");
        }
    }

    #[test]
    fn a_projected_parse_keeps_the_named_fields_typed_and_skips_the_rest_unbuilt() {
        let text = r#"{"_id": {"$oid": "65f000000000000000000001"}, "userId": "u1",
            "blob": {"$date": "not a date"}, "permissions": {"view": {}},
            "escaped\"key": 1, "clinicId": {"$oid": "65f000000000000000000002"}}"#;
        let fields = ["userId", "clinicId", "permissions"];

        let kept = parse_document_fields(text, Some(&fields)).expect("the kept fields are valid");
        let whole = parse_document_fields(text, None);
        let not_json = parse_document_fields(r#"{"userId": "u1", "x": [1, }"#, Some(&fields));
        let not_object = parse_document_fields("[1]", Some(&fields));

        assert_eq!(
            kept,
            doc! {
                "userId": "u1",
                "permissions": { "view": {} },
                "clinicId": ObjectId::parse_str("65f000000000000000000002").expect("oid"),
            }
        );
        assert!(whole.is_err(), "the whole document holds a broken $date");
        assert!(matches!(not_json, Err(ExtJsonError::Json(_))));
        assert!(not_object.is_err());
    }

    fn sample() -> Document {
        doc! {
            "_id": ObjectId::parse_str("5f1a2b3c4d5e6f7081920a1b").expect("valid oid"),
            "at": DateTime::from_millis(1_700_000_000_123),
            "small": 7_i32,
            "big": 9_000_000_000_i64,
            "ratio": 2.5_f64,
            "tags": ["a", "b"],
            "nested": { "permissions": { "view": {} } },
        }
    }

    #[test]
    fn every_dialect_parses_back_to_the_same_typed_document() {
        for dialect in [Dialect::Canonical, Dialect::Relaxed, Dialect::Legacy] {
            let text = to_string(&sample(), dialect);
            let parsed = parse_document(&text).expect("parses");
            assert_eq!(parsed, sample(), "{dialect:?}: {text}");
        }
    }

    #[test]
    fn legacy_dates_are_millis_and_ints_are_plain() {
        let text = to_string(&sample(), Dialect::Legacy);
        assert!(text.contains(r#""at":{"$date":1700000000123}"#), "{text}");
        assert!(text.contains(r#""small":7"#), "{text}");
        assert!(
            text.contains(r#""big":{"$numberLong":"9000000000"}"#),
            "{text}"
        );
    }

    #[test]
    fn legacy_date_millis_from_the_java_driver_parse_as_dates() {
        let parsed =
            parse_document(r#"{"createdTime": {"$date": 1584533425000}}"#).expect("parses");
        assert_eq!(
            parsed
                .get_datetime("createdTime")
                .expect("a date")
                .timestamp_millis(),
            1_584_533_425_000
        );
    }

    #[test]
    fn relaxed_iso_dates_parse_as_dates() {
        let parsed =
            parse_document(r#"{"t": {"$date": "2020-03-18T12:10:25.000Z"}}"#).expect("parses");
        assert_eq!(
            parsed.get_datetime("t").expect("a date").timestamp_millis(),
            1_584_533_425_000
        );
    }

    #[test]
    fn a_json_array_is_not_a_document() {
        let error = parse_document("[1]").expect_err("not a document");
        assert!(matches!(error, ExtJsonError::NotADocument("an array")));
    }

    #[test]
    fn a_malformed_object_id_is_an_error() {
        assert!(matches!(
            parse_document(r#"{"_id": {"$oid": "nothex"}}"#),
            Err(ExtJsonError::ExtJson(_))
        ));
    }

    #[test]
    fn canonical_text_is_what_bson_renders_for_every_type() {
        let document = doc! {
            "_id": ObjectId::parse_str("65f000000000000000000001").expect("hex"),
            "text": "quote \" backslash \\ newline \n tab \t é ☃ \u{1}",
            "i32": -7_i32, "i64": 5_000_000_000_i64, "yes": true, "no": false, "none": null,
            "doubles": [1.5, 2.0, -0.0, 0.0, 1e300, f64::NAN, f64::INFINITY, -1.25e-7],
            "dates": [DateTime::from_millis(1_700_000_000_000), DateTime::from_millis(-5)],
            "nested": {"a": [{"b": {}}, []], "": "empty key", "k\"ey": 1},
            "ts": bson::Timestamp { time: 1_710_000_000, increment: 3 },
            "bin": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![1, 2] },
            "re": bson::Regex { pattern: "^a".into(), options: "i".into() },
            "dec": "1.5".parse::<bson::Decimal128>().expect("decimal"),
            "code": bson::Bson::JavaScriptCode("f()".into()),
            "min": bson::Bson::MinKey, "max": bson::Bson::MaxKey, "undef": bson::Bson::Undefined,
        };

        assert_eq!(
            canonical_text(&document),
            Bson::Document(document.clone())
                .into_canonical_extjson()
                .to_string()
        );
        assert_eq!(
            to_string(&document, Dialect::Canonical),
            canonical_text(&document)
        );
    }
}
