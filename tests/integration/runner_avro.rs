//! The runner with an Avro CDC input on the real broker and registry: the four kinds of poison a
//! CDC topic can carry go to the DLQ with their error headers, the good records around them are
//! processed, and the admin endpoint reports readiness and the counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use apache_avro::types::Value as Avro;
use bson::doc;
use clinic::cdc::{self, Encoding, Operation, extjson::Dialect};
use clinic::streams::OutValue;
use clinic::streams::codec::AvroCodec;
use clinic::streams::dlq::headers;
use clinic::streams::kafka::{Health, admin};
use clinic::streams::runner;
use clinic::testkit;

use crate::example_processor::{CLINICS, ClinicNames, OUTPUT};
use crate::runner::Fixture;

fn insert(id: &str, full: bson::Document) -> cdc::ChangeEvent {
    testkit::change(Operation::Insert, "clinics", id, Some(full))
}

fn as_connector_writes(event: &cdc::ChangeEvent) -> OutValue {
    OutValue::Avro {
        schema: Arc::from(cdc::mongo::MONGO_CHANGE_STREAM_SCHEMA),
        value: cdc::mongo::to_avro(event, Dialect::Legacy),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn avro_cdc_poison_goes_to_the_dlq_with_headers_and_good_records_flow() {
    let fixture = Fixture::with_topics(
        1,
        &[
            CLINICS,
            "clinic.clinicians",
            OUTPUT,
            "clinic-names.dlq",
            "clinic-names.projections.changelog",
            "clinic-names.clinicians.changelog",
        ],
    )
    .await;
    let registry = fixture.endpoints.schema_registry_url();
    let codec = AvroCodec::new(&registry);
    let topic = fixture.topic(CLINICS);
    let good = |id: &str, name: &str| insert(id, doc! { "_id": id, "name": name });
    let first = codec
        .encode(&topic, &as_connector_writes(&good("c1", "North")))
        .await
        .expect("encode");
    // Invalid JSON inside the Avro strings: a connector record whose fullDocument is broken.
    let mut broken = cdc::mongo::to_avro(&good("c2", "x"), Dialect::Legacy);
    if let Avro::Record(fields) = &mut broken {
        fields[3].1 = Avro::Union(1, Box::new(Avro::String("{\"_id\": \"c2\", ".into())));
    }
    let broken = codec
        .encode(
            &topic,
            &OutValue::Avro {
                schema: Arc::from(cdc::mongo::MONGO_CHANGE_STREAM_SCHEMA),
                value: broken,
            },
        )
        .await
        .expect("encode");
    // Wrong shape: valid Avro of another schema (registered under another subject).
    let other_schema =
        r#"{"type": "record", "name": "Other", "fields": [{"name": "x", "type": "int"}]}"#;
    let wrong_shape = codec
        .encode(
            &fixture.topic("elsewhere"),
            &OutValue::Avro {
                schema: Arc::from(other_schema),
                value: Avro::Record(vec![("x".into(), Avro::Int(1))]),
            },
        )
        .await
        .expect("encode");
    let last = codec
        .encode(&topic, &as_connector_writes(&good("c3", "South")))
        .await
        .expect("encode");

    fixture.produce_to(CLINICS, "c1", &first).await;
    fixture
        .produce_to(CLINICS, "magic", &[1, 0, 0, 0, 1, 2])
        .await;
    fixture
        .produce_to(CLINICS, "unknown-id", &[0, 0x7f, 0xff, 0xff, 0xf0, 2])
        .await;
    fixture.produce_to(CLINICS, "broken", &broken).await;
    fixture.produce_to(CLINICS, "shape", &wrong_shape).await;
    fixture.produce_to(CLINICS, "c3", &last).await;

    let health = Arc::new(Health::default());
    let address = admin::serve("127.0.0.1:0".parse().expect("addr"), Arc::clone(&health))
        .await
        .expect("admin");
    let shutdown = Arc::new(AtomicBool::new(false));
    let config = testkit::runner_config(&fixture.endpoints, &fixture.prefix);
    let running = tokio::spawn(runner::run_until(
        config,
        || ClinicNames::new(Encoding::Avro),
        Arc::clone(&shutdown),
        Arc::clone(&health),
    ));

    let (outputs, dead) = tokio::task::block_in_place(|| {
        (
            fixture.wait_for(OUTPUT, 2, Duration::from_secs(60)),
            fixture.wait_for("clinic-names.dlq", 4, Duration::from_secs(60)),
        )
    });
    let ready = reqwest::get(format!("http://{address}/readyz"))
        .await
        .expect("readyz");
    let metrics = reqwest::get(format!("http://{address}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    shutdown.store(true, Ordering::SeqCst);
    running
        .await
        .expect("joined")
        .expect("the runner stops cleanly");

    assert_eq!(outputs.len(), 2);
    let names: Vec<Option<String>> = outputs.iter().map(|(key, _)| key.clone()).collect();
    assert_eq!(names, [Some("c1".into()), Some("c3".into())]);
    let keys: Vec<Option<String>> = dead.iter().map(|(key, _)| key.clone()).collect();
    assert_eq!(
        keys,
        [
            Some("magic".into()),
            Some("unknown-id".into()),
            Some("broken".into()),
            Some("shape".into())
        ]
    );
    assert_eq!(ready.status(), 200);
    // Other tests in this process count into the same registry, hence "at least".
    let dlq_total: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("clinic_streams_dlq_records_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no DLQ counter in {metrics}"));
    assert!(dlq_total >= 4.0, "{metrics}");
    assert!(
        metrics.contains("clinic_streams_commits_total"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_carry_the_error_headers() {
    let fixture = Fixture::new(1).await;
    fixture.produce_raw("bad", b"{not json").await;
    let shutdown = Arc::new(AtomicBool::new(false));
    let config = testkit::runner_config(&fixture.endpoints, &fixture.prefix);
    let running = tokio::spawn(runner::run_until(
        config,
        counter::Counter::default,
        Arc::clone(&shutdown),
        Arc::new(Health::default()),
    ));

    let headers = tokio::task::block_in_place(|| {
        fixture.read_headers("counter.dlq", Duration::from_secs(60))
    });
    shutdown.store(true, Ordering::SeqCst);
    running.await.expect("joined").expect("clean stop");

    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header(headers::TOPIC), Some("in"));
    assert_eq!(header(headers::PARTITION), Some("0"));
    assert_eq!(header(headers::OFFSET), Some("0"));
    assert_eq!(header(headers::CLASS), Some("poison"));
    assert_eq!(header(headers::PROCESSOR), Some("counter"));
    assert!(header(headers::MESSAGE).is_some_and(|m| m.contains("not JSON")));
}

/// The same counting processor as `examples/counter_processor.rs`, in-process.
mod counter {
    use clinic::streams::{
        Context, Input, InputFormat, OutValue, OutputRecord, Payload, ProcessError, Processor,
        Topology,
    };

    #[derive(Default)]
    pub struct Counter;

    impl Processor for Counter {
        fn topology(&self) -> Topology {
            Topology::new("counter")
                .stream("in", InputFormat::Json)
                .output("out")
                .store("counts")
        }
        fn process(&mut self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
            let Payload::Json(Some(value)) = input.payload else {
                return Err(ProcessError::Poison("no value".into()));
            };
            ctx.emit(OutputRecord {
                topic: "out".into(),
                key: "k".into(),
                value: Some(OutValue::Json(value)),
            })
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fatal_processor_error_stops_the_runner_with_that_error() {
    struct Broken;
    impl clinic::streams::Processor for Broken {
        fn topology(&self) -> clinic::streams::Topology {
            clinic::streams::Topology::new("counter")
                .stream("in", clinic::streams::InputFormat::Json)
                .output("out")
                .store("counts")
        }
        fn process(
            &mut self,
            _: clinic::streams::Input<'_>,
            _: &mut clinic::streams::Context<'_>,
        ) -> Result<(), clinic::streams::ProcessError> {
            Err(clinic::streams::ProcessError::Fatal(
                "invariant broken".into(),
            ))
        }
    }
    let fixture = Fixture::new(1).await;
    fixture.produce(0, 3).await;
    let config = testkit::runner_config(&fixture.endpoints, &fixture.prefix);

    let result = tokio::time::timeout(
        Duration::from_secs(60),
        runner::run_until(
            config,
            || Broken,
            Arc::new(AtomicBool::new(false)),
            Arc::new(Health::default()),
        ),
    )
    .await
    .expect("the runner stops by itself");

    let error = result.expect_err("a fatal error ends the runner with an error");
    assert!(
        format!("{error:#}").contains("invariant broken"),
        "{error:#}"
    );
    let outputs =
        tokio::task::block_in_place(|| fixture.read("out", usize::MAX, Duration::from_secs(2)));
    assert!(
        outputs.is_empty(),
        "nothing of the failed transaction is visible"
    );
}
