//! Avro values as JSON, so the Avro envelopes decode through the same code as the JSON ones, and
//! small builders for the Avro values the encoders write.

use apache_avro::types::Value as Avro;
use serde_json::{Map, Value};

/// An Avro value as JSON: records and maps become objects, unions their branch, enums their
/// symbol, numbers numbers. Bytes become an array of numbers (no CDC envelope field is bytes).
/// Takes the value: its strings move into the JSON rather than being copied. A record's null
/// fields are left out (most of a change event's are): the envelope readers take a null field
/// as an absent one (`fields::take`).
pub fn into_json(value: Avro) -> Value {
    match value {
        Avro::Null => Value::Null,
        Avro::Boolean(b) => Value::Bool(b),
        Avro::Int(i) | Avro::Date(i) | Avro::TimeMillis(i) => Value::from(i),
        Avro::Long(l)
        | Avro::TimeMicros(l)
        | Avro::TimestampMillis(l)
        | Avro::TimestampMicros(l)
        | Avro::TimestampNanos(l)
        | Avro::LocalTimestampMillis(l)
        | Avro::LocalTimestampMicros(l)
        | Avro::LocalTimestampNanos(l) => Value::from(l),
        Avro::Float(f) => Value::from(f64::from(f)),
        Avro::Double(d) => Value::from(d),
        Avro::String(s) | Avro::Enum(_, s) => Value::String(s),
        Avro::Uuid(u) => Value::String(u.to_string()),
        Avro::Bytes(b) | Avro::Fixed(_, b) => {
            Value::Array(b.into_iter().map(Value::from).collect())
        }
        Avro::Union(_, inner) => into_json(*inner),
        Avro::Array(items) => Value::Array(items.into_iter().map(into_json).collect()),
        Avro::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| (k, into_json(v)))
                .collect(),
        ),
        Avro::Record(fields) => Value::Object(
            fields
                .into_iter()
                .filter(|(_, v)| !is_null(v))
                .map(|(k, v)| (k, into_json(v)))
                .collect::<Map<_, _>>(),
        ),
        other => Value::String(format!("{other:?}")),
    }
}

fn is_null(value: &Avro) -> bool {
    match value {
        Avro::Null => true,
        Avro::Union(_, inner) => is_null(inner),
        _ => false,
    }
}

/// `["null", T]` union value: branch 0 for `None`, 1 for `Some`.
pub(crate) fn nullable(value: Option<Avro>) -> Avro {
    match value {
        None => Avro::Union(0, Box::new(Avro::Null)),
        Some(v) => Avro::Union(1, Box::new(v)),
    }
}

pub(crate) fn string(s: impl Into<String>) -> Avro {
    Avro::String(s.into())
}

pub(crate) fn record(fields: Vec<(&str, Avro)>) -> Avro {
    Avro::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// Test support: a value through real Avro binary with `schema` and back, as a registry round trip
/// would do (the registry part is covered by the integration tests).
#[cfg(test)]
pub(crate) fn through_avro_binary(schema: &str, value: Avro) -> Avro {
    use apache_avro::Schema;
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::writer::datum::GenericDatumWriter;
    let schema = Schema::parse_str(schema).expect("schema parses");
    let bytes = GenericDatumWriter::builder(&schema)
        .build()
        .expect("writer")
        .write_value_to_vec(value)
        .expect("the value matches its schema");
    GenericDatumReader::builder(&schema)
        .build()
        .expect("reader")
        .read_value(&mut bytes.as_slice())
        .expect("decodes")
}
