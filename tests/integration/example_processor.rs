//! A tiny processor that exercises every feature of the streams core through the test driver:
//! a stream input in two CDC forms, a CDC table, a store of its own (with changelog), emitting
//! only on change, tombstones, and poison records going to the DLQ while the rest continues.
//!
//! `clinic-names` projects each clinic to `{_id, name, createdByName}` on `example.clinic_names`,
//! where `createdByName` comes from the clinicians table (`clinic.clinicians`).

use std::sync::Arc;

use apache_avro::types::Value as Avro;
use bson::{Bson, Document, doc};
use clinic::cdc::{self, Encoding, Envelope, Format, Operation, extjson::Dialect};
use clinic::streams::dlq::headers;
use clinic::streams::store::table_key;
use clinic::streams::{
    Context, Input, InputFormat, OutValue, OutputRecord, Payload, ProcessError, Processor, Topology,
};
use serde::{Deserialize, Serialize};

pub(crate) const CLINICS: &str = "clinic.clinics";
const CLINICIANS: &str = "clinic.clinicians";
pub(crate) const OUTPUT: &str = "example.clinic_names";
const PROJECTIONS: &str = "projections";
const CLINICIANS_TABLE: &str = "clinicians";
const OUTPUT_SCHEMA: &str = r#"{"type": "record", "name": "ClinicName", "namespace": "clinic.example",
  "fields": [{"name": "_id", "type": "string"}, {"name": "name", "type": "string"},
             {"name": "createdByName", "type": ["null", "string"], "default": null}]}"#;

/// What the processor last emitted for a clinic: its store's value type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Projection {
    name: String,
    created_by: Option<String>,
}

impl Projection {
    /// The fields projected, as the clinic document has them.
    fn to_document(&self) -> Result<Document, ProcessError> {
        let mut document = doc! { "name": &self.name };
        if let Some(created_by) = &self.created_by {
            let id = cdc::extjson::parse_value(created_by)
                .map_err(|e| ProcessError::Fatal(format!("BUG: a stored key: {e}")))?;
            document.insert("createdBy", id);
        }
        Ok(document)
    }
}

pub(crate) struct ClinicNames {
    clinics_format: Format,
    schema: Arc<str>,
}

impl ClinicNames {
    pub(crate) fn new(clinics_encoding: Encoding) -> Self {
        Self {
            clinics_format: Format {
                envelope: Envelope::MongoChangeStream,
                encoding: clinics_encoding,
            },
            schema: Arc::from(OUTPUT_SCHEMA),
        }
    }

    fn project(document: &Document) -> Result<Projection, ProcessError> {
        let name = match document.get("name") {
            Some(Bson::String(name)) => name.clone(),
            other => {
                return Err(ProcessError::Poison(format!(
                    "clinic name should be a string, found {other:?}"
                )));
            }
        };
        let created_by = document.get("createdBy").map(table_key);
        Ok(Projection { name, created_by })
    }
}

impl Processor for ClinicNames {
    fn topology(&self) -> Topology {
        Topology::new("clinic-names")
            .stream(CLINICS, InputFormat::Cdc(self.clinics_format))
            .table(
                CLINICIANS,
                Format {
                    envelope: Envelope::MongoChangeStream,
                    encoding: Encoding::Json,
                },
                CLINICIANS_TABLE,
            )
            .store(PROJECTIONS)
            .output(OUTPUT)
    }

    fn process(&mut self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let Payload::Cdc(record) = input.payload else {
            return Ok(());
        };
        let id = record.document_id()?.clone();
        let key = table_key(&id);
        let output_key = match &id {
            Bson::ObjectId(oid) => oid.to_hex(),
            Bson::String(s) => s.clone(),
            other => other.to_string(),
        };
        let stored: Option<Projection> = ctx.get_json(PROJECTIONS, &key)?;
        // An update without the looked-up document patches what was projected last time.
        let previous = || stored.as_ref().map(Projection::to_document).transpose();
        let projection = match cdc::next_document(record, previous)? {
            cdc::Next::Keep => return Ok(()),
            cdc::Next::Gone => {
                if stored.is_some() {
                    ctx.delete(PROJECTIONS, &key)?;
                    ctx.emit(OutputRecord {
                        topic: OUTPUT.into(),
                        key: output_key,
                        value: None,
                    })?;
                }
                return Ok(());
            }
            cdc::Next::Becomes(document) => Self::project(&document)?,
        };
        if stored.as_ref() == Some(&projection) {
            return Ok(());
        }
        let created_by_name = match &projection.created_by {
            Some(clinician) => ctx
                .get_document(CLINICIANS_TABLE, clinician)?
                .and_then(|c| c.get_str("name").ok().map(str::to_owned)),
            None => None,
        };
        ctx.put_json(PROJECTIONS, &key, &projection)?;
        ctx.emit(OutputRecord {
            topic: OUTPUT.into(),
            key: output_key.clone(),
            value: Some(OutValue::Avro {
                schema: Arc::clone(&self.schema),
                value: Avro::Record(vec![
                    ("_id".into(), Avro::String(output_key)),
                    ("name".into(), Avro::String(projection.name)),
                    (
                        "createdByName".into(),
                        match created_by_name {
                            Some(name) => Avro::Union(1, Box::new(Avro::String(name))),
                            None => Avro::Union(0, Box::new(Avro::Null)),
                        },
                    ),
                ]),
            }),
        })
    }
}

type Driver = clinic::streams::driver::TestDriver<ClinicNames>;

fn event(
    operation: Operation,
    id: &str,
    full: Option<Document>,
    updated: Document,
) -> cdc::ChangeEvent {
    cdc::ChangeEvent {
        updated_fields: updated,
        ..clinic::testkit::change(operation, "clinics", id, full)
    }
}

/// Pipes a change as the source connector's JSON output, double-encoded like Tidepool's.
fn pipe(driver: &mut Driver, topic: &str, change: &cdc::ChangeEvent) {
    driver
        .pipe_tidepool_json(topic, change)
        .expect("no fatal error");
}

fn names(records: &[OutputRecord]) -> Vec<(String, Option<String>)> {
    records
        .iter()
        .map(|r| {
            let name = r.value.as_ref().map(|v| match v {
                OutValue::Avro {
                    value: Avro::Record(fields),
                    ..
                } => match &fields[1].1 {
                    Avro::String(name) => name.clone(),
                    other => panic!("name is {other:?}"),
                },
                other => panic!("unexpected value {other:?}"),
            });
            (r.key.clone(), name)
        })
        .collect()
}

#[test]
fn emits_on_insert_and_name_change_only_and_tombstones_on_delete() {
    let mut driver = Driver::new(ClinicNames::new(Encoding::Json));

    pipe(
        &mut driver,
        CLINICS,
        &event(
            Operation::Insert,
            "c1",
            Some(doc! { "_id": "c1", "name": "North" }),
            doc! {},
        ),
    );
    pipe(
        &mut driver,
        CLINICS,
        &event(
            Operation::Update,
            "c1",
            Some(doc! { "_id": "c1", "name": "North", "tier": 2 }),
            doc! { "tier": 2 },
        ),
    );
    pipe(
        &mut driver,
        CLINICS,
        &event(
            Operation::Update,
            "c1",
            Some(doc! { "_id": "c1", "name": "North East" }),
            doc! { "name": "North East" },
        ),
    );
    pipe(
        &mut driver,
        CLINICS,
        &event(Operation::Delete, "c1", None, doc! {}),
    );

    assert_eq!(
        names(&driver.read_output(OUTPUT)),
        [
            ("c1".into(), Some("North".into())),
            ("c1".into(), Some("North East".into())),
            ("c1".into(), None)
        ]
    );
    assert!(driver.store(PROJECTIONS).is_empty());
    let changelog: Vec<_> = driver
        .changelog()
        .iter()
        .map(|r| (r.topic.as_str(), r.value.is_some()))
        .collect();
    assert_eq!(
        changelog,
        [
            ("clinic-names.projections.changelog", true),
            ("clinic-names.projections.changelog", true),
            ("clinic-names.projections.changelog", false)
        ]
    );
}

#[test]
fn update_without_full_document_is_applied_to_the_stored_projection() {
    let mut driver = Driver::new(ClinicNames::new(Encoding::Json));
    pipe(
        &mut driver,
        CLINICS,
        &event(
            Operation::Insert,
            "c2",
            Some(doc! { "_id": "c2", "name": "Old" }),
            doc! {},
        ),
    );

    pipe(
        &mut driver,
        CLINICS,
        &event(Operation::Update, "c2", None, doc! { "name": "New" }),
    );

    assert_eq!(
        names(&driver.read_output(OUTPUT)),
        [
            ("c2".into(), Some("Old".into())),
            ("c2".into(), Some("New".into()))
        ]
    );
}

#[test]
fn poison_records_go_to_the_dlq_with_error_headers_and_the_partition_continues() {
    let mut driver = Driver::new(ClinicNames::new(Encoding::Json));

    driver
        .pipe(CLINICS, Some(b"k"), Some(b"{not json"))
        .expect("no fatal error");
    pipe(
        &mut driver,
        CLINICS,
        &event(
            Operation::Insert,
            "c3",
            Some(doc! { "_id": "c3", "name": 42 }),
            doc! {},
        ),
    );
    pipe(
        &mut driver,
        CLINICS,
        &event(
            Operation::Insert,
            "c4",
            Some(doc! { "_id": "c4", "name": "Fine" }),
            doc! {},
        ),
    );

    let dead = driver.dead_letters();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].topic, "clinic-names.dlq");
    assert_eq!(dead[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(dead[0].value.as_deref(), Some(&b"{not json"[..]));
    assert_eq!(dead[0].header(headers::TOPIC), Some(CLINICS));
    assert_eq!(dead[0].header(headers::OFFSET), Some("0"));
    assert_eq!(dead[0].header(headers::CLASS), Some("poison"));
    assert_eq!(dead[0].header(headers::PROCESSOR), Some("clinic-names"));
    assert!(
        dead[0]
            .header(headers::MESSAGE)
            .is_some_and(|m| m.contains("not JSON"))
    );
    assert_eq!(dead[1].header(headers::OFFSET), Some("1"));
    assert!(
        dead[1]
            .header(headers::MESSAGE)
            .is_some_and(|m| m.contains("should be a string"))
    );
    // The poison insert left no state; the next record was processed.
    assert_eq!(driver.store(PROJECTIONS).len(), 1);
    assert_eq!(
        names(&driver.read_output(OUTPUT)),
        [("c4".into(), Some("Fine".into()))]
    );
}

#[test]
fn clinicians_table_is_materialized_and_joined() {
    let mut driver = Driver::new(ClinicNames::new(Encoding::Json));
    let clinician = |op, full| cdc::ChangeEvent {
        namespace: None,
        ..event(op, "u1", full, doc! {})
    };

    pipe(
        &mut driver,
        CLINICIANS,
        &clinician(
            Operation::Insert,
            Some(doc! { "_id": "u1", "name": "Dr. Who" }),
        ),
    );
    pipe(
        &mut driver,
        CLINICIANS,
        &cdc::ChangeEvent {
            removed_fields: vec!["title".into()],
            ..clinician(Operation::Update, None)
        },
    );
    pipe(
        &mut driver,
        CLINICS,
        &event(
            Operation::Insert,
            "c5",
            Some(doc! { "_id": "c5", "name": "South", "createdBy": "u1" }),
            doc! {},
        ),
    );

    let output = driver.read_output(OUTPUT);
    let Some(OutValue::Avro {
        value: Avro::Record(fields),
        ..
    }) = &output[0].value
    else {
        panic!("an Avro record")
    };
    assert_eq!(
        fields[2].1,
        Avro::Union(1, Box::new(Avro::String("Dr. Who".into())))
    );
    assert_eq!(driver.store(CLINICIANS_TABLE).len(), 1);

    pipe(&mut driver, CLINICIANS, &clinician(Operation::Delete, None));
    assert!(driver.store(CLINICIANS_TABLE).is_empty());
}

#[test]
fn avro_cdc_input_is_processed_like_json_and_unresolvable_bytes_are_dead_lettered() {
    let mut driver = Driver::new(ClinicNames::new(Encoding::Avro));
    let insert = event(
        Operation::Insert,
        "c6",
        Some(doc! { "_id": "c6", "name": "West" }),
        doc! {},
    );

    driver
        .pipe_avro(
            CLINICS,
            None,
            Some(cdc::mongo::to_avro(&insert, Dialect::Relaxed)),
        )
        .expect("no fatal error");
    driver.pipe_unresolvable(CLINICS, &[1, 0, 0, 0, 9], "bad magic byte 1");

    assert_eq!(
        names(&driver.read_output(OUTPUT)),
        [("c6".into(), Some("West".into()))]
    );
    assert_eq!(driver.dead_letters().len(), 1);
    assert_eq!(
        driver.dead_letters()[0].header(headers::MESSAGE),
        Some("bad magic byte 1")
    );
}

#[test]
fn preloaded_state_suppresses_a_repeat_emit() {
    let mut driver = Driver::new(ClinicNames::new(Encoding::Json));
    let stored = serde_json::to_vec(&Projection {
        name: "Kept".into(),
        created_by: None,
    })
    .expect("json");
    driver.preload(PROJECTIONS, &table_key(&Bson::String("c7".into())), &stored);

    pipe(
        &mut driver,
        CLINICS,
        &event(
            Operation::Replace,
            "c7",
            Some(doc! { "_id": "c7", "name": "Kept" }),
            doc! {},
        ),
    );

    assert!(driver.read_output(OUTPUT).is_empty());
}

#[test]
fn writing_to_an_undeclared_topic_is_fatal() {
    struct Rogue;
    impl Processor for Rogue {
        fn topology(&self) -> Topology {
            Topology::new("rogue").stream("in", InputFormat::Json)
        }
        fn process(&mut self, _: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
            ctx.emit(OutputRecord {
                topic: "elsewhere".into(),
                key: "k".into(),
                value: None,
            })
        }
    }
    let mut driver = clinic::streams::driver::TestDriver::new(Rogue);

    let error = driver.pipe("in", None, Some(b"{}")).expect_err("fatal");

    assert!(error.message.contains("not declared"), "{error}");
}

#[test]
fn collection_level_events_are_skipped_on_tables_and_streams_not_dead_lettered() {
    let mut driver = Driver::new(ClinicNames::new(Encoding::Json));
    let drop = |coll: &str| cdc::ChangeEvent {
        document_key: Document::new(),
        namespace: Some(cdc::Namespace {
            db: "clinic".into(),
            coll: Some(coll.into()),
        }),
        ..event(Operation::Other("drop".into()), "-", None, doc! {})
    };

    pipe(&mut driver, CLINICS, &drop("clinics"));
    pipe(&mut driver, CLINICIANS, &drop("clinicians"));
    pipe(
        &mut driver,
        CLINICS,
        &cdc::ChangeEvent {
            document_key: Document::new(),
            namespace: None,
            ..event(Operation::Other("dropDatabase".into()), "-", None, doc! {})
        },
    );

    assert!(driver.dead_letters().is_empty());
    assert!(driver.read_output(OUTPUT).is_empty());
    assert!(driver.store(CLINICIANS_TABLE).is_empty());
}
