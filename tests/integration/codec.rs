//! The streams runtime's Avro codec against the real registry: framing, caching and the
//! poison / transient classification the runtime acts on.

use std::sync::Arc;

use apache_avro::types::Value as Avro;
use clinic::cdc::extjson::Dialect;
use clinic::cdc::{self, AvroValue, Operation, mongo};
use clinic::smoke::unique;
use clinic::streams::OutValue;
use clinic::streams::codec::{AvroCodec, CodecError};
use serde_json::json;

use crate::helpers;

const SCHEMA: &str = r#"{"type": "record", "name": "Permission", "namespace": "clinic.test",
  "fields": [{"name": "_id", "type": "string"}, {"name": "upload", "type": "boolean"}]}"#;

fn record(id: &str) -> OutValue {
    OutValue::Avro {
        schema: Arc::from(SCHEMA),
        value: Avro::Record(vec![
            ("_id".into(), Avro::String(id.into())),
            ("upload".into(), Avro::Boolean(true)),
        ]),
    }
}

#[tokio::test]
async fn encoded_values_decode_back_through_the_registry() {
    let endpoints = helpers::stack(&["registry"]).await;
    let codec = AvroCodec::new(&endpoints.schema_registry_url());
    let topic = unique("codec");

    let bytes = codec.encode(&topic, &record("p1")).await.expect("encodes");
    let decoded = codec.decode(Some(&bytes)).await.expect("decodes");

    assert_eq!(bytes[0], 0);
    let OutValue::Avro { value, .. } = record("p1") else {
        unreachable!()
    };
    assert_eq!(decoded, Some(value));
    assert_eq!(
        codec.decode(None).await,
        Ok(None),
        "a tombstone stays a tombstone"
    );
}

#[tokio::test]
async fn bad_framing_and_unknown_schema_ids_are_poison() {
    let endpoints = helpers::stack(&["registry"]).await;
    let codec = AvroCodec::new(&endpoints.schema_registry_url());

    let bad_magic = codec.decode(Some(&[7, 0, 0, 0, 1, 2])).await;
    let too_short = codec.decode(Some(&[0, 0, 1])).await;
    let unknown_id = codec.decode(Some(&[0, 0x7f, 0xff, 0xff, 0xf0, 2])).await;

    assert!(
        matches!(bad_magic, Err(CodecError::Poison(ref m)) if m.contains("magic byte 0x07")),
        "{bad_magic:?}"
    );
    assert!(
        matches!(too_short, Err(CodecError::Poison(_))),
        "{too_short:?}"
    );
    assert!(
        matches!(unknown_id, Err(CodecError::Poison(_))),
        "{unknown_id:?}"
    );
}

#[tokio::test]
async fn bytes_that_do_not_match_their_schema_are_poison() {
    let endpoints = helpers::stack(&["registry"]).await;
    let codec = AvroCodec::new(&endpoints.schema_registry_url());
    let mut bytes = codec
        .encode(&unique("codec"), &record("p2"))
        .await
        .expect("encodes");
    bytes.truncate(6); // the frame, then a string length with no string

    let result = codec.decode(Some(&bytes)).await;

    assert!(matches!(result, Err(CodecError::Poison(_))), "{result:?}");
}

#[tokio::test]
async fn a_schema_seen_before_decodes_without_the_registry_and_checks_the_same() {
    let endpoints = helpers::stack(&["registry"]).await;
    let codec = AvroCodec::new(&endpoints.schema_registry_url());
    let bytes = codec
        .encode(&unique("codec"), &record("p4"))
        .await
        .expect("encodes");
    let mut truncated = bytes.clone();
    truncated.truncate(6);

    let unknown_yet = codec.decode_known(Some(&bytes));
    let first = codec.decode(Some(&bytes)).await;
    let known = codec.decode_known(Some(&bytes));
    let known_truncated = codec.decode_known(Some(&truncated));

    assert!(unknown_yet.is_none(), "{unknown_yet:?}");
    assert!(matches!(first, Ok(Some(_))), "{first:?}");
    assert_eq!(known, Some(first), "the same value without the registry");
    assert!(
        matches!(known_truncated, Some(Err(CodecError::Poison(_)))),
        "{known_truncated:?}"
    );
    assert_eq!(codec.decode_known(None), Some(Ok(None)));
}

#[tokio::test]
async fn a_cdc_value_reads_as_json_known_or_not_and_a_cut_one_is_poison() {
    let endpoints = helpers::stack(&["registry"]).await;
    let url = endpoints.schema_registry_url();
    let bytes = AvroCodec::new(&url)
        .encode(&unique("codec"), &record("p5"))
        .await
        .expect("encodes");
    let codec = AvroCodec::new(&url);
    let mut truncated = bytes.clone();
    truncated.truncate(6);

    let unknown_yet = codec.decode_known_json(Some(&bytes));
    let first = codec.decode_json(Some(&bytes)).await;
    let known = codec.decode_known_json(Some(&bytes));
    let known_truncated = codec.decode_known_json(Some(&truncated));

    assert!(unknown_yet.is_none(), "{unknown_yet:?}");
    assert_eq!(first, Ok(Some(json!({"_id": "p5", "upload": true}))));
    assert_eq!(known, Some(first), "read straight as JSON, the same");
    assert!(
        matches!(known_truncated, Some(Err(CodecError::Poison(_)))),
        "{known_truncated:?}"
    );
    assert_eq!(codec.decode_known_json(None), Some(Ok(None)));
}

#[tokio::test]
async fn a_known_change_events_fields_are_read_straight_and_decode_as_its_json_does() {
    let endpoints = helpers::stack(&["registry"]).await;
    let url = endpoints.schema_registry_url();
    let id = bson::oid::ObjectId::new();
    let event = clinic::testkit::change(
        Operation::Insert,
        "patients",
        id,
        Some(bson::doc! {"_id": id, "userId": "u1"}),
    );
    let value = OutValue::Avro {
        schema: Arc::from(mongo::MONGO_CHANGE_STREAM_SCHEMA),
        value: mongo::to_avro(&event, Dialect::Canonical),
    };
    let bytes = AvroCodec::new(&url)
        .encode(&unique("codec"), &value)
        .await
        .expect("encodes");
    let other = AvroCodec::new(&url)
        .encode(&unique("codec"), &record("p6"))
        .await
        .expect("encodes");
    let codec = AvroCodec::new(&url);
    let mut truncated = bytes.clone();
    truncated.truncate(bytes.len() / 2);

    let unknown_yet = codec.decode_known_change(Some(&bytes));
    let json = codec.decode_json(Some(&bytes)).await.expect("decodes");
    let known = codec.decode_known_change(Some(&bytes));
    let known_truncated = codec.decode_known_change(Some(&truncated));
    codec.decode_json(Some(&other)).await.expect("decodes");
    let not_a_change = codec.decode_known_change(Some(&other));

    assert!(unknown_yet.is_none(), "{unknown_yet:?}");
    let Some(Ok(Some(AvroValue::Change(raw)))) = known else {
        panic!("read straight: {known:?}");
    };
    assert_eq!(raw.decode(None).expect("decodes"), event);
    assert_eq!(
        mongo::decode(json.expect("a value")).expect("decodes"),
        event
    );
    assert!(
        matches!(known_truncated, Some(Err(CodecError::Poison(_)))),
        "{known_truncated:?}"
    );
    // Another record reads as a change event without its fields, poison as its JSON is.
    let Some(Ok(Some(not_a_change))) = not_a_change else {
        panic!("{not_a_change:?}");
    };
    let decoded = cdc::decode_avro_value_fields(
        cdc::Envelope::MongoChangeStream,
        None,
        Some(not_a_change),
        None,
    );
    assert!(
        matches!(decoded, Err(cdc::DecodeError::Missing("operationType"))),
        "{decoded:?}"
    );
    assert_eq!(codec.decode_known_change(None), Some(Ok(None)));
}

#[tokio::test]
async fn a_type_the_json_reader_leaves_out_reads_through_the_generic_value() {
    const BYTES: &str = r#"{"type": "record", "name": "Blob", "namespace": "clinic.test",
      "fields": [{"name": "data", "type": "bytes"}]}"#;
    let endpoints = helpers::stack(&["registry"]).await;
    let codec = AvroCodec::new(&endpoints.schema_registry_url());
    let value = OutValue::Avro {
        schema: Arc::from(BYTES),
        value: Avro::Record(vec![("data".into(), Avro::Bytes(vec![1, 2]))]),
    };
    let bytes = codec
        .encode(&unique("codec"), &value)
        .await
        .expect("encodes");

    let first = codec.decode_json(Some(&bytes)).await;
    let known = codec.decode_known_json(Some(&bytes));

    assert_eq!(first, Ok(Some(json!({"data": [1, 2]}))));
    assert_eq!(known, Some(first));
}

#[tokio::test]
async fn an_unreachable_registry_is_transient() {
    // Port 9 (discard) on loopback: nothing listens there.
    let codec = AvroCodec::new("http://127.0.0.1:9/apis/ccompat/v7");

    let decoded = codec.decode(Some(&[0, 0, 0, 0, 1, 2])).await;
    let encoded = codec.encode("t", &record("p3")).await;

    assert!(
        matches!(decoded, Err(CodecError::Transient(_))),
        "{decoded:?}"
    );
    assert!(
        matches!(encoded, Err(CodecError::Transient(_))),
        "{encoded:?}"
    );
}
