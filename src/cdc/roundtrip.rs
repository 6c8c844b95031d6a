//! Property: for generated events, encode → decode is the identity, in every form and dialect.

use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, Timestamp};
use proptest::prelude::*;

use super::extjson::Dialect;
use super::*;

/// Field names as documents have them: never `$`-prefixed (those are Extended JSON operators).
fn key() -> impl Strategy<Value = String> {
    "[a-zA-Z][a-zA-Z0-9_]{0,7}"
}

/// Scalars that survive every dialect. `wide_ints` only emits 64-bit integers outside the 32-bit
/// range, because relaxed JSON cannot tell a small Int64 from an Int32.
fn scalar(wide_ints: bool) -> impl Strategy<Value = Bson> {
    let int64 = if wide_ints {
        prop_oneof![
            (i64::from(i32::MAX) + 1)..i64::MAX,
            i64::MIN..(i64::from(i32::MIN) - 1)
        ]
        .boxed()
    } else {
        any::<i64>().boxed()
    };
    prop_oneof![
        ".{0,12}".prop_map(Bson::String),
        any::<i32>().prop_map(Bson::Int32),
        int64.prop_map(Bson::Int64),
        (-1.0e9..1.0e9_f64).prop_map(Bson::Double),
        any::<bool>().prop_map(Bson::Boolean),
        Just(Bson::Null),
        any::<[u8; 12]>().prop_map(|b| Bson::ObjectId(ObjectId::from_bytes(b))),
        (0_i64..253_402_300_799_999).prop_map(|ms| Bson::DateTime(DateTime::from_millis(ms))),
    ]
}

fn value(wide_ints: bool) -> impl Strategy<Value = Bson> {
    scalar(wide_ints).prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Bson::Array),
            prop::collection::vec((key(), inner), 0..4)
                .prop_map(|kv| Bson::Document(kv.into_iter().collect())),
        ]
    })
}

fn document(wide_ints: bool) -> impl Strategy<Value = Document> {
    prop::collection::vec((key(), value(wide_ints)), 0..5).prop_map(|kv| kv.into_iter().collect())
}

fn id() -> impl Strategy<Value = Bson> {
    prop_oneof![
        any::<[u8; 12]>().prop_map(|b| Bson::ObjectId(ObjectId::from_bytes(b))),
        "[a-z0-9]{1,10}".prop_map(Bson::String),
        any::<i32>().prop_map(Bson::Int32),
    ]
}

fn dotted_updates(wide_ints: bool) -> impl Strategy<Value = Document> {
    prop::collection::vec(
        (
            prop::collection::vec(key(), 1..4).prop_map(|parts| parts.join(".")),
            value(wide_ints),
        ),
        0..4,
    )
    .prop_map(|kv| kv.into_iter().collect())
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (any::<u32>(), 0..=i32::MAX as u32).prop_map(|(time, increment)| Timestamp {
        time: time / 2,
        increment,
    })
}

/// An event as the MongoDB source connector emits it.
fn truncated_arrays() -> impl Strategy<Value = Vec<TruncatedArray>> {
    prop::collection::vec(
        ("[a-z]{1,5}(\\.[a-z]{1,3})?", 0_u32..10)
            .prop_map(|(field, new_size)| TruncatedArray { field, new_size }),
        0..3,
    )
}

fn mongo_event(wide_ints: bool) -> impl Strategy<Value = ChangeEvent> {
    let operation = prop_oneof![
        Just(Operation::Insert),
        Just(Operation::Update),
        Just(Operation::Replace),
        Just(Operation::Delete),
        Just(Operation::Other("invalidate".into())),
    ];
    (
        operation,
        id(),
        prop::option::of(document(wide_ints)),
        dotted_updates(wide_ints),
        prop::collection::vec("[a-z]{1,5}(\\.[a-z0-9]{1,3}){0,2}", 0..3),
        "[0-9A-F]{8,24}",
        prop::option::of(timestamp()),
        prop::option::of(0_i64..4_000_000_000_000),
        prop::option::of(("[a-z]{1,8}", prop::option::of("[a-z_]{1,10}"))),
        truncated_arrays(),
    )
        .prop_map(
            |(operation, id, full, updated, removed, token, cluster_time, wall, ns, truncated)| {
                let is_update = operation == Operation::Update;
                let has_key = !matches!(operation, Operation::Other(_));
                ChangeEvent {
                    full_document: if operation == Operation::Delete {
                        None
                    } else {
                        full
                    },
                    document_key: if has_key {
                        bson::doc! { "_id": id }
                    } else {
                        Document::new()
                    },
                    updated_fields: if is_update { updated } else { Document::new() },
                    removed_fields: if is_update { removed } else { Vec::new() },
                    truncated_arrays: if is_update { truncated } else { Vec::new() },
                    namespace: ns.map(|(db, coll)| Namespace { db, coll }),
                    source: SourcePosition {
                        resume_token: Some(bson::doc! { "_data": token }),
                        cluster_time,
                        wall_time: wall.map(DateTime::from_millis),
                    },
                    operation,
                }
            },
        )
}

/// An event as Debezium emits it (no replace or resume token; source time always present).
fn debezium_event(wide_ints: bool) -> impl Strategy<Value = ChangeEvent> {
    (
        prop_oneof![
            Just(Operation::Insert),
            Just(Operation::Update),
            Just(Operation::Delete),
            Just(Operation::Snapshot)
        ],
        id(),
        document(wide_ints),
        dotted_updates(wide_ints),
        prop::collection::vec("[a-z]{1,5}(\\.[a-z]{1,3})?", 0..3),
        timestamp(),
        0_i64..4_000_000_000_000,
        ("[a-z]{1,8}", "[a-z_]{1,10}"),
        truncated_arrays(),
    )
        .prop_map(
            |(operation, id, full, updated, removed, cluster_time, wall, (db, coll), truncated)| {
                let is_update = operation == Operation::Update;
                ChangeEvent {
                    full_document: (operation != Operation::Delete).then_some(full),
                    document_key: bson::doc! { "_id": id },
                    updated_fields: if is_update { updated } else { Document::new() },
                    removed_fields: if is_update { removed } else { Vec::new() },
                    truncated_arrays: if is_update { truncated } else { Vec::new() },
                    namespace: Some(Namespace {
                        db,
                        coll: Some(coll),
                    }),
                    source: SourcePosition {
                        resume_token: None,
                        cluster_time: Some(cluster_time),
                        wall_time: Some(DateTime::from_millis(wall)),
                    },
                    operation,
                }
            },
        )
}

fn check_mongo(event: &ChangeEvent, dialect: Dialect) -> Result<(), TestCaseError> {
    let expected = CdcRecord::Change(event.clone());
    let text = mongo::to_json(event, dialect).to_string();
    let double = serde_json::to_string(&text).expect("string literal");
    let avro = avro_json::through_avro_binary(
        mongo::MONGO_CHANGE_STREAM_SCHEMA,
        mongo::to_avro(event, dialect),
    );

    prop_assert_eq!(
        &decode_json(Envelope::MongoChangeStream, None, Some(text.as_bytes())).expect("plain"),
        &expected
    );
    prop_assert_eq!(
        &decode_json(Envelope::MongoChangeStream, None, Some(double.as_bytes())).expect("double"),
        &expected
    );
    prop_assert_eq!(
        &decode_avro(Envelope::MongoChangeStream, None, Some(&avro)).expect("avro"),
        &expected
    );
    let read = avro_json::read_through_avro_binary(
        mongo::MONGO_CHANGE_STREAM_SCHEMA,
        mongo::to_avro(event, dialect),
    );
    prop_assert_eq!(
        &decode_values_fields(Envelope::MongoChangeStream, None, Some(read), None)
            .expect("avro read as JSON"),
        &expected
    );
    let raw = avro_json::read_change_through_avro_binary(mongo::to_avro(event, dialect));
    prop_assert_eq!(
        &CdcRecord::Change(raw.decode(None).expect("avro read straight")),
        &expected
    );
    Ok(())
}

fn check_debezium(record: &CdcRecord, dialect: Dialect) -> Result<(), TestCaseError> {
    let (key, value) = debezium::to_json(record, dialect);
    let key_text = key.to_string();
    let value_text = value.map(|v| v.to_string());
    let decoded = decode_json(
        Envelope::Debezium,
        Some(key_text.as_bytes()),
        value_text.as_deref().map(str::as_bytes),
    )
    .expect("json");
    prop_assert_eq!(&decoded, record);

    let (key, value) = debezium::to_avro(record, dialect);
    let read_key = avro_json::read_through_avro_binary(debezium::DEBEZIUM_KEY_SCHEMA, key.clone());
    let read_value = value
        .clone()
        .map(|v| avro_json::read_through_avro_binary(debezium::DEBEZIUM_ENVELOPE_SCHEMA, v));
    let key = avro_json::through_avro_binary(debezium::DEBEZIUM_KEY_SCHEMA, key);
    let value =
        value.map(|v| avro_json::through_avro_binary(debezium::DEBEZIUM_ENVELOPE_SCHEMA, v));
    prop_assert_eq!(
        &decode_avro(Envelope::Debezium, Some(&key), value.as_ref()).expect("avro"),
        record
    );
    prop_assert_eq!(
        &decode_values_fields(Envelope::Debezium, Some(read_key), read_value, None)
            .expect("avro read as JSON"),
        record
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mongo_events_round_trip_in_canonical_and_legacy(event in mongo_event(false)) {
        check_mongo(&event, Dialect::Canonical)?;
        check_mongo(&event, Dialect::Legacy)?;
    }

    #[test]
    fn mongo_events_round_trip_in_relaxed(event in mongo_event(true)) {
        check_mongo(&event, Dialect::Relaxed)?;
    }

    #[test]
    fn debezium_records_round_trip(event in debezium_event(false), tombstone in any::<bool>()) {
        let record = if tombstone {
            CdcRecord::Tombstone { document_key: event.document_key.clone() }
        } else {
            CdcRecord::Change(event)
        };
        check_debezium(&record, Dialect::Canonical)?;
        check_debezium(&record, Dialect::Legacy)?;
    }

    #[test]
    fn canonical_text_is_what_bson_renders(document in document(false)) {
        prop_assert_eq!(
            extjson::canonical_text(&document),
            Bson::Document(document.clone()).into_canonical_extjson().to_string()
        );
    }

    #[test]
    fn debezium_records_round_trip_in_relaxed(event in debezium_event(true)) {
        check_debezium(&CdcRecord::Change(event), Dialect::Relaxed)?;
    }
}
