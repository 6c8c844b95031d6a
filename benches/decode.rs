//! CPU per change event of what a partition worker does with a record, without Kafka: the Avro
//! body read into the JSON the envelope readers take (straight, as the runner reads a known
//! schema's records, and through the generic value, as it did before and does for a schema's
//! first record), the change event decoded from it (the whole `fullDocument`, and only
//! permissions' three fields), the change event's fields read straight from the body (as the
//! runner reads a known schema's MongoDB change events) and decoded, and the permissions task's
//! whole handling of the record read as JSON (decode, projection, store and changelog, output).
//! Each figure is the best of five passes over `<records>` patient inserts (default 20,000) with
//! the `canonical` dialect the source connector's `ExtendedJson` formatter writes; one thread,
//! no I/O, so runs compare to a few percent where the processors bench swings by ten.
//!
//! Run: `cargo bench --bench decode [-- <records>]`; `DECODE_ONLY=<words>` runs only the figures
//! whose name holds them (to profile one).

use std::time::Instant;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as Avro;
use apache_avro::writer::datum::GenericDatumWriter;
use bson::oid::ObjectId;
use clinic::cdc::extjson::Dialect;
use clinic::cdc::{self, Envelope, Operation, avro_json};
use clinic::streams::driver::TestDriver;
use clinic::testkit;

fn main() {
    let records: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let schema = Schema::parse_str(cdc::mongo::MONGO_CHANGE_STREAM_SCHEMA).expect("schema");
    let clinics: Vec<ObjectId> = (0..40).map(|_| ObjectId::new()).collect();
    let bodies: Vec<Vec<u8>> = (0..records)
        .map(|n| {
            let document = testkit::bench_patient(n, clinics[n % clinics.len()]);
            let id = document.get_object_id("_id").expect("an ObjectId");
            let event = testkit::change(Operation::Insert, "patients", id, Some(document));
            GenericDatumWriter::builder(&schema)
                .build()
                .expect("writer")
                .write_value_to_vec(cdc::mongo::to_avro(&event, Dialect::Canonical))
                .expect("the event matches its schema")
        })
        .collect();
    let reader = GenericDatumReader::builder(&schema)
        .build()
        .expect("reader");
    let generic = |body: &[u8]| -> Avro {
        let value = reader.read_value(&mut &body[..]).expect("reads");
        assert!(value.validate(&schema), "valid");
        value
    };
    let values: Vec<serde_json::Value> = bodies
        .iter()
        .map(|b| avro_json::read(&reader, b).expect("reads"))
        .collect();
    let fields: &[&str] = &["userId", "clinicId", "permissions"];
    println!("decode: {records} patient inserts (Avro change events, canonical Extended JSON)");
    report(
        "Avro body read and validated (generic value)",
        records,
        || {
            for body in &bodies {
                std::hint::black_box(generic(body));
            }
        },
    );
    report(
        "Avro body to JSON through the generic value",
        records,
        || {
            for body in &bodies {
                std::hint::black_box(avro_json::into_json(generic(body)));
            }
        },
    );
    report("Avro body read straight to JSON", records, || {
        for body in &bodies {
            std::hint::black_box(avro_json::read(&reader, body).expect("reads"));
        }
    });
    report("Avro body to the change event's fields", records, || {
        for body in &bodies {
            std::hint::black_box(cdc::mongo::RawChange::read_avro(&reader, body).expect("reads"));
        }
    });
    report(
        "Avro body to change event, JSON between, 3 fields",
        records,
        || {
            for body in &bodies {
                let json = avro_json::read(&reader, body).expect("reads");
                let event = cdc::mongo::decode_fields(json, Some(fields));
                std::hint::black_box(event.expect("decodes"));
            }
        },
    );
    report(
        "Avro body to change event, fields read, 3 fields",
        records,
        || {
            for body in &bodies {
                let raw = cdc::mongo::RawChange::read_avro(&reader, body).expect("reads");
                std::hint::black_box(raw.decode(Some(fields)).expect("decodes"));
            }
        },
    );
    for (what, kept) in [
        ("change event from JSON, whole fullDocument", None),
        (
            "change event from JSON, permissions' 3 fields",
            Some(fields),
        ),
    ] {
        report(what, records, || {
            for value in &values {
                let event = cdc::decode_values_fields(
                    Envelope::MongoChangeStream,
                    None,
                    Some(value.clone()),
                    kept,
                );
                std::hint::black_box(event.expect("decodes"));
            }
        });
    }
    report("cloning the JSON value (in the two above)", records, || {
        for value in &values {
            std::hint::black_box(value.clone());
        }
    });
    report(
        "permissions task, record read as JSON to outcome",
        records,
        || {
            let mut driver = TestDriver::new(clinic_permissions::processor::Permissions::new(
                clinic_permissions::config::Inputs::default(),
            ));
            for value in &values {
                driver
                    .pipe_avro_json("clinic.patients", None, Some(value.clone()))
                    .expect("handled");
            }
            std::hint::black_box(
                driver.read_output(clinic_permissions::processor::PATIENT_PERMISSIONS),
            );
        },
    );
}

/// Runs `pass` five times and prints the best time per record.
fn report(what: &str, records: usize, mut pass: impl FnMut()) {
    if std::env::var("DECODE_ONLY").is_ok_and(|only| !what.contains(&only)) {
        return;
    }
    let best = (0..5)
        .map(|_| {
            let started = Instant::now();
            pass();
            started.elapsed()
        })
        .min()
        .expect("five passes");
    println!(
        "  {what:<48} {:>6.2} µs per event",
        best.as_secs_f64() * 1e6 / records as f64
    );
}
