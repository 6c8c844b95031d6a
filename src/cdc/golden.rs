//! Golden cases: change events written by hand the way each producer writes them, decoded.

use apache_avro::types::Value as Avro;
use bson::oid::ObjectId;
use bson::{DateTime, Timestamp, doc};

use super::*;

const PATIENT_ID: &str = "5f1a2b3c4d5e6f7081920a1b";
const CLINIC_ID: &str = "60a1b2c3d4e5f60718293a4b";

fn oid(hex: &str) -> ObjectId {
    ObjectId::parse_str(hex).expect("valid oid")
}

fn change(record: CdcRecord) -> ChangeEvent {
    match record {
        CdcRecord::Change(event) => event,
        CdcRecord::Tombstone { .. } => panic!("expected a change, got a tombstone"),
    }
}

#[test]
fn double_encoded_default_json_update_from_tidepool_keeps_dotted_paths_and_types() {
    // What existing Tidepool connectors produce: DefaultJson (legacy dialect) event text, then
    // JsonConverter wraps that text in a JSON string literal.
    let event_text = format!(
        r#"{{"_id": {{"_data": "8265F1A2B3000000012B022C0100296E5A1004"}}, "operationType": "update",
            "clusterTime": {{"$timestamp": {{"t": 1710000000, "i": 3}}}},
            "wallTime": {{"$date": 1710000000123}},
            "fullDocument": {{"_id": {{"$oid": "{PATIENT_ID}"}}, "clinicId": {{"$oid": "{CLINIC_ID}"}},
                "userId": "1a2b3c4d5e", "fullName": "Jane Doe", "permissions": {{"custodian": {{}}, "view": {{}}}},
                "updatedTime": {{"$date": 1710000000000}},
                "dataSources": [{{"providerName": "dexcom", "state": "pending", "expirationTime": {{"$date": 1712592000000}}}}]}},
            "ns": {{"db": "clinic", "coll": "patients"}},
            "documentKey": {{"_id": {{"$oid": "{PATIENT_ID}"}}}},
            "updateDescription": {{"updatedFields": {{"updatedTime": {{"$date": 1710000000000}},
                "dataSources.0.expirationTime": {{"$date": 1712592000000}},
                "providerConnectionRequests.dexcom": [{{"providerName": "dexcom", "createdTime": {{"$date": 1709990000000}}}}]}},
              "removedFields": ["lastRequestedDexcomConnectTime"], "truncatedArrays": []}}}}"#
    );
    let kafka_bytes = serde_json::to_vec(&event_text).expect("a JSON string literal");
    assert_eq!(kafka_bytes[0], b'"');

    let event = change(
        decode_json(Envelope::MongoChangeStream, None, Some(&kafka_bytes)).expect("decodes"),
    );

    assert_eq!(event.operation, Operation::Update);
    assert_eq!(event.document_key, doc! { "_id": oid(PATIENT_ID) });
    let full = event.full_document.as_ref().expect("updateLookup document");
    assert_eq!(
        full.get_object_id("clinicId").expect("typed oid"),
        oid(CLINIC_ID)
    );
    assert_eq!(
        full.get_document("permissions").expect("map"),
        &doc! { "custodian": {}, "view": {} }
    );
    assert_eq!(
        event
            .updated_fields
            .get_datetime("dataSources.0.expirationTime")
            .expect("dotted key, typed date"),
        &DateTime::from_millis(1_712_592_000_000)
    );
    assert!(
        event
            .updated_fields
            .get_array("providerConnectionRequests.dexcom")
            .is_ok()
    );
    assert_eq!(event.removed_fields, ["lastRequestedDexcomConnectTime"]);
    assert_eq!(
        event.namespace,
        Some(Namespace {
            db: "clinic".into(),
            coll: Some("patients".into())
        })
    );
    assert_eq!(
        event.source.cluster_time,
        Some(Timestamp {
            time: 1_710_000_000,
            increment: 3
        })
    );
    assert_eq!(
        event.source.wall_time,
        Some(DateTime::from_millis(1_710_000_000_123))
    );
    assert_eq!(
        event.source.resume_token,
        Some(doc! { "_data": "8265F1A2B3000000012B022C0100296E5A1004" })
    );
}

#[test]
fn plain_canonical_json_insert_decodes_with_typed_values() {
    let text = format!(
        r#"{{"_id": {{"_data": "01"}}, "operationType": "insert",
            "fullDocument": {{"_id": {{"$oid": "{CLINIC_ID}"}}, "name": "Clinic A",
              "createdTime": {{"$date": {{"$numberLong": "1724838368478"}}}}, "patientCount": {{"$numberLong": "12"}},
              "tier": {{"$numberInt": "2"}}}},
            "ns": {{"db": "clinic", "coll": "clinics"}}, "documentKey": {{"_id": {{"$oid": "{CLINIC_ID}"}}}}}}"#
    );

    let event = change(
        decode_json(Envelope::MongoChangeStream, None, Some(text.as_bytes())).expect("decodes"),
    );

    assert_eq!(event.operation, Operation::Insert);
    let full = event.full_document.expect("insert has the document");
    assert_eq!(full.get_i64("patientCount").expect("Int64 kept"), 12);
    assert_eq!(full.get_i32("tier").expect("Int32 kept"), 2);
    assert_eq!(
        full.get_datetime("createdTime")
            .expect("date")
            .timestamp_millis(),
        1_724_838_368_478
    );
    assert!(event.updated_fields.is_empty());
}

#[test]
fn relaxed_json_with_iso_dates_decodes() {
    let text = r#"{"_id": {"_data": "02"}, "operationType": "replace",
        "fullDocument": {"_id": "abc", "lastUploadReminderTime": {"$date": "2024-03-09T16:00:00Z"}, "n": 3},
        "documentKey": {"_id": "abc"}}"#;

    let event = change(
        decode_json(Envelope::MongoChangeStream, None, Some(text.as_bytes())).expect("decodes"),
    );

    assert_eq!(event.operation, Operation::Replace);
    assert_eq!(event.document_key, doc! { "_id": "abc" });
    let full = event.full_document.expect("replace has the document");
    assert_eq!(
        full.get_datetime("lastUploadReminderTime")
            .expect("date")
            .timestamp_millis(),
        1_710_000_000_000
    );
}

#[test]
fn avro_update_with_null_full_document_and_json_string_fields_decodes() {
    // The connector's default Avro schema: sub-documents are JSON strings, fullDocument is null
    // when the document was deleted before the lookup.
    let value = Avro::Record(vec![
        ("_id".into(), Avro::String(r#"{"_data": "03"}"#.into())),
        ("operationType".into(), Avro::Union(1, Box::new(Avro::String("update".into())))),
        ("fullDocumentBeforeChange".into(), Avro::Union(0, Box::new(Avro::Null))),
        ("fullDocument".into(), Avro::Union(0, Box::new(Avro::Null))),
        (
            "ns".into(),
            Avro::Union(
                1,
                Box::new(Avro::Record(vec![
                    ("db".into(), Avro::String("clinic".into())),
                    ("coll".into(), Avro::Union(1, Box::new(Avro::String("clinicians".into())))),
                ])),
            ),
        ),
        ("to".into(), Avro::Union(0, Box::new(Avro::Null))),
        (
            "documentKey".into(),
            Avro::Union(1, Box::new(Avro::String(format!(r#"{{"_id": {{"$oid": "{PATIENT_ID}"}}}}"#)))),
        ),
        (
            "updateDescription".into(),
            Avro::Union(
                1,
                Box::new(Avro::Record(vec![
                    (
                        "updatedFields".into(),
                        Avro::Union(1, Box::new(Avro::String(r#"{"rolesUpdates.3": {"roles": ["CLINIC_ADMIN"]}, "permissions.upload": {}}"#.into()))),
                    ),
                    ("removedFields".into(), Avro::Union(1, Box::new(Avro::Array(vec![Avro::String("permissions.note".into())])))),
                    ("truncatedArrays".into(), Avro::Union(1, Box::new(Avro::Array(vec![])))),
                    ("disambiguatedPaths".into(), Avro::Union(0, Box::new(Avro::Null))),
                ])),
            ),
        ),
        ("clusterTime".into(), Avro::Union(1, Box::new(Avro::String(r#"{"$timestamp": {"t": 1710000001, "i": 1}}"#.into())))),
        ("txnNumber".into(), Avro::Union(0, Box::new(Avro::Null))),
        ("lsid".into(), Avro::Union(0, Box::new(Avro::Null))),
        ("wallTime".into(), Avro::Union(1, Box::new(Avro::Long(1_710_000_001_000)))),
    ]);
    // Read as the runner reads a known schema's records (the generic value's reading checked
    // the same by the helper).
    let read =
        avro_json::read_through_avro_binary(mongo::MONGO_CHANGE_STREAM_SCHEMA, value.clone());
    let straight = avro_json::read_change_through_avro_binary(value);

    let event = change(
        decode_values_fields(Envelope::MongoChangeStream, None, Some(read), None).expect("decodes"),
    );
    assert_eq!(
        straight.decode(None).expect("read straight, decodes"),
        event
    );

    assert_eq!(event.operation, Operation::Update);
    assert_eq!(event.full_document, None);
    assert_eq!(event.document_key, doc! { "_id": oid(PATIENT_ID) });
    assert_eq!(
        event.updated_fields,
        doc! { "rolesUpdates.3": { "roles": ["CLINIC_ADMIN"] }, "permissions.upload": {} }
    );
    assert_eq!(event.removed_fields, ["permissions.note"]);
    assert_eq!(
        event.source.wall_time,
        Some(DateTime::from_millis(1_710_000_001_000))
    );
}

#[test]
fn debezium_json_create_update_delete_and_tombstone_decode() {
    let key = format!(r#"{{"id": "{{\"$oid\": \"{PATIENT_ID}\"}}"}}"#);
    let create = format!(
        r#"{{"schema": {{"type": "struct"}}, "payload": {{"before": null,
            "after": "{{\"_id\": {{\"$oid\": \"{PATIENT_ID}\"}}, \"userId\": \"u1\", \"permissions\": {{\"view\": {{}}}}}}",
            "source": {{"version": "2.7.3.Final", "connector": "mongodb", "name": "tp", "ts_ms": 1710000002000,
                       "snapshot": "false", "db": "clinic", "rs": "rs0", "collection": "patients", "ord": 7}},
            "op": "c", "ts_ms": 1710000002100}}}}"#
    );
    let update = r#"{"after": "{\"_id\": 1}", "updateDescription": {"removedFields": ["permissions.view"],
        "updatedFields": "{\"permissions.upload\": {}}", "truncatedArrays": null},
        "source": {"db": "clinic", "collection": "patients", "ts_ms": 1710000003000, "ord": 1}, "op": "u"}"#;
    let delete = r#"{"before": null, "after": null, "source": {"db": "clinic", "collection": "patients", "ts_ms": 1710000004000, "ord": 1}, "op": "d"}"#;

    let created = change(
        decode_json(
            Envelope::Debezium,
            Some(key.as_bytes()),
            Some(create.as_bytes()),
        )
        .expect("create"),
    );
    let updated = change(
        decode_json(
            Envelope::Debezium,
            Some(key.as_bytes()),
            Some(update.as_bytes()),
        )
        .expect("update"),
    );
    let deleted = change(
        decode_json(
            Envelope::Debezium,
            Some(key.as_bytes()),
            Some(delete.as_bytes()),
        )
        .expect("delete"),
    );
    let tombstone = decode_json(Envelope::Debezium, Some(key.as_bytes()), None).expect("tombstone");

    assert_eq!(created.operation, Operation::Insert);
    assert_eq!(created.document_key, doc! { "_id": oid(PATIENT_ID) });
    assert_eq!(
        created
            .full_document
            .expect("after")
            .get_str("userId")
            .expect("userId"),
        "u1"
    );
    assert_eq!(
        created.source.cluster_time,
        Some(Timestamp {
            time: 1_710_000_002,
            increment: 7
        })
    );
    assert_eq!(
        created.namespace.expect("ns").coll.as_deref(),
        Some("patients")
    );
    assert_eq!(updated.operation, Operation::Update);
    assert_eq!(updated.updated_fields, doc! { "permissions.upload": {} });
    assert_eq!(updated.removed_fields, ["permissions.view"]);
    assert_eq!(deleted.operation, Operation::Delete);
    assert_eq!(deleted.full_document, None);
    assert_eq!(
        tombstone,
        CdcRecord::Tombstone {
            document_key: doc! { "_id": oid(PATIENT_ID) }
        }
    );
}

#[test]
fn debezium_string_and_numeric_ids_keep_their_type() {
    let string_key = br#"{"id": "\"1234\""}"#;
    let number_key = br#"{"id": "1004"}"#;

    let by_string = decode_json(Envelope::Debezium, Some(string_key), None).expect("tombstone");
    let by_number = decode_json(Envelope::Debezium, Some(number_key), None).expect("tombstone");

    assert_eq!(
        by_string,
        CdcRecord::Tombstone {
            document_key: doc! { "_id": "1234" }
        }
    );
    assert_eq!(
        by_number,
        CdcRecord::Tombstone {
            document_key: doc! { "_id": 1004_i32 }
        }
    );
}

#[test]
fn debezium_avro_update_decodes() {
    let event = ChangeEvent {
        operation: Operation::Update,
        namespace: Some(Namespace {
            db: "clinic".into(),
            coll: Some("clinicians".into()),
        }),
        document_key: doc! { "_id": oid(CLINIC_ID) },
        full_document: Some(doc! { "_id": oid(CLINIC_ID), "roles": ["CLINIC_MEMBER"] }),
        updated_fields: doc! { "roles": ["CLINIC_MEMBER"] },
        removed_fields: vec![],
        truncated_arrays: Vec::new(),
        source: SourcePosition {
            resume_token: None,
            cluster_time: Some(Timestamp {
                time: 1_710_000_005,
                increment: 2,
            }),
            wall_time: Some(DateTime::from_millis(1_710_000_005_000)),
        },
    };
    let (key, value) =
        debezium::to_avro(&CdcRecord::Change(event.clone()), extjson::Dialect::Relaxed);
    let key = avro_json::read_through_avro_binary(debezium::DEBEZIUM_KEY_SCHEMA, key);
    let value = avro_json::read_through_avro_binary(
        debezium::DEBEZIUM_ENVELOPE_SCHEMA,
        value.expect("a change has a value"),
    );

    let decoded =
        decode_values_fields(Envelope::Debezium, Some(key), Some(value), None).expect("decodes");

    assert_eq!(decoded, CdcRecord::Change(event));
}

#[test]
fn database_level_events_decode_as_other_operations() {
    let text = r#"{"_id": {"_data": "04"}, "operationType": "drop", "ns": {"db": "clinic", "coll": "patients"}}"#;

    let event = change(
        decode_json(Envelope::MongoChangeStream, None, Some(text.as_bytes())).expect("decodes"),
    );

    assert_eq!(event.operation, Operation::Other("drop".into()));
    assert!(event.document_key.is_empty());
}

#[test]
fn malformed_records_are_decode_errors() {
    type Case<'a> = (&'a str, Envelope, Option<&'a [u8]>, Option<&'a [u8]>);
    let cases: [Case; 7] = [
        ("not JSON", Envelope::MongoChangeStream, None, Some(b"{not json")),
        ("string holding non-JSON", Envelope::MongoChangeStream, None, Some(br#""{oops""#)),
        ("no operationType", Envelope::MongoChangeStream, None, Some(br#"{"documentKey": {"_id": 1}}"#)),
        ("no documentKey on insert", Envelope::MongoChangeStream, None, Some(br#"{"operationType": "insert"}"#)),
        ("invalid JSON inside a string field", Envelope::MongoChangeStream, None, Some(br#"{"operationType": "insert", "documentKey": "{\"_id\": ", "fullDocument": null}"#)),
        ("unknown Debezium op", Envelope::Debezium, Some(br#"{"id": "1"}"#), Some(br#"{"op": "x", "source": {"db": "d"}}"#)),
        ("tombstone without key", Envelope::Debezium, None, None),
    ];
    for (what, envelope, key, value) in cases {
        assert!(
            decode_json(envelope, key, value).is_err(),
            "{what} should not decode"
        );
    }
}

#[test]
fn invalid_json_inside_an_avro_string_names_the_field() {
    let value = serde_json::json!({"operationType": "insert", "documentKey": "{\"_id\": 1}", "fullDocument": "{broken"});

    let error = mongo::decode(value).expect_err("broken fullDocument");

    assert!(error.to_string().contains("fullDocument"), "{error}");
}

#[test]
fn legacy_binary_and_decimal_values_parse() {
    let text = r#"{"operationType": "insert", "documentKey": {"_id": 1},
        "fullDocument": {"_id": 1, "blob": {"$binary": "AQID", "$type": "00"}, "price": {"$numberDecimal": "1.50"}}}"#;

    let event = change(
        decode_json(Envelope::MongoChangeStream, None, Some(text.as_bytes())).expect("decodes"),
    );

    let full = event.full_document.expect("document");
    assert!(matches!(full.get("blob"), Some(bson::Bson::Binary(b)) if b.bytes == [1, 2, 3]));
    assert!(matches!(full.get("price"), Some(bson::Bson::Decimal128(_))));
}

#[test]
fn truncated_arrays_decode_from_both_envelopes() {
    let mongo = br#"{"operationType": "update", "documentKey": {"_id": 1},
        "updateDescription": {"updatedFields": {}, "removedFields": [],
          "truncatedArrays": [{"field": "rolesUpdates", "newSize": 2}, {"field": "a.b", "newSize": 0}]}}"#;
    let debezium = br#"{"updateDescription": {"updatedFields": "{}", "removedFields": null,
          "truncatedArrays": [{"field": "rolesUpdates", "size": 2}]},
        "source": {"db": "clinic", "collection": "clinicians", "ts_ms": 1, "ord": 1}, "op": "u"}"#;
    let expected = |field: &str, new_size| TruncatedArray {
        field: field.into(),
        new_size,
    };

    let from_mongo =
        change(decode_json(Envelope::MongoChangeStream, None, Some(mongo)).expect("decodes"));
    let from_debezium = change(
        decode_json(Envelope::Debezium, Some(br#"{"id": "1"}"#), Some(debezium)).expect("decodes"),
    );

    assert_eq!(
        from_mongo.truncated_arrays,
        vec![expected("rolesUpdates", 2), expected("a.b", 0)]
    );
    assert_eq!(
        from_debezium.truncated_arrays,
        vec![expected("rolesUpdates", 2)]
    );
    let negative = br#"{"operationType": "update", "documentKey": {"_id": 1},
        "updateDescription": {"truncatedArrays": [{"field": "x", "newSize": -1}]}}"#;
    assert!(decode_json(Envelope::MongoChangeStream, None, Some(negative)).is_err());
}

#[test]
fn the_connectors_copy_of_an_existing_document_is_a_snapshot_read_both_ways() {
    // `MongoCopyDataManager`'s pipeline: an insert whose `_id` marks the copy, with no
    // clusterTime or wallTime (startup.mode=copy_existing, or copy.existing on a re-created
    // connector), as DefaultJson text double-encoded by JsonConverter.
    let event_text = format!(
        r#"{{"_id": {{"_id": {{"$oid": "{PATIENT_ID}"}}, "copyingData": true}}, "operationType": "insert",
            "documentKey": {{"_id": {{"$oid": "{PATIENT_ID}"}}}}, "ns": {{"db": "clinic", "coll": "patients"}},
            "fullDocument": {{"_id": {{"$oid": "{PATIENT_ID}"}}, "clinicId": {{"$oid": "{CLINIC_ID}"}},
                "userId": "1a2b3c4d5e", "permissions": {{"custodian": {{}}}}}}}}"#
    );
    let kafka_bytes = serde_json::to_vec(&event_text).expect("a JSON string literal");
    let event = change(
        decode_json(Envelope::MongoChangeStream, None, Some(&kafka_bytes)).expect("decodes"),
    );
    assert_eq!(event.operation, Operation::Snapshot);
    assert_eq!(
        event.source.resume_token,
        Some(doc! { "_id": oid(PATIENT_ID), "copyingData": true })
    );
    assert_eq!(
        (event.source.cluster_time, event.source.wall_time),
        (None, None)
    );
    // An ordinary insert stays one.
    let insert = event_text.replace(r#", "copyingData": true"#, "");
    let bytes = serde_json::to_vec(&insert).expect("a JSON string literal");
    let plain =
        change(decode_json(Envelope::MongoChangeStream, None, Some(&bytes)).expect("decodes"));
    assert_eq!(plain.operation, Operation::Insert);
    // Written back as the connector writes its copies, in both its outputs.
    let json = mongo::to_json(&event, extjson::Dialect::Canonical);
    assert_eq!(json["operationType"], "insert");
    assert_eq!(json["_id"]["copyingData"], true);
    let avro = mongo::to_avro(&event, extjson::Dialect::Canonical);
    let back =
        change(decode_avro(Envelope::MongoChangeStream, None, Some(&avro)).expect("decodes"));
    assert_eq!(back.operation, Operation::Snapshot);
}
