//! `clinic dlq` on the local stack.
//!
//! - The repository's patient-permissions sink connector and FerretDB: records the sink cannot
//!   read (a value that is not JSON, a key without `_id`) reach `connect.sink.dlq` while the
//!   task keeps running (`mongo.errors.tolerance=data`); `list` counts them, `show` decodes them
//!   without personal data unless `--reveal`; `replay` skips a letter a later record of its key
//!   supersedes, sends the others once (a second replay sends nothing), and a record whose
//!   cause is not fixed comes back saying what it replays.
//! - A processor (the runtime's counter example): a record it rejects is dead-lettered; once a
//!   version that takes it runs, `replay` brings the output to exact, once.

use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{Bson, Document, doc};
use clinic::ops::connectors::Connect;
use clinic::testkit;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::io::Write as _;

use crate::helpers;

const TOPIC: &str = "sink.gatekeeper.patient_permissions";
const COLLECTION: &str = "patient_permissions";

fn row(user: &str, clinic: ObjectId) -> Document {
    doc! { "userId": user, "clinicId": clinic, "permissions": { "view": {} } }
}

fn json(document: &Document) -> String {
    Bson::Document(document.clone())
        .into_canonical_extjson()
        .to_string()
}

fn key(id: ObjectId) -> String {
    clinic::streams::sink_key(&Bson::ObjectId(id))
}

async fn produce(producer: &FutureProducer, topic: &str, key: &str, value: &str) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produced");
}

/// The collection, sorted by `_id`, once it equals `expected` (or what it held after 90 s).
async fn settle(db: &mongodb::Database, expected: Vec<Document>) -> Vec<Document> {
    let wanted = std::collections::BTreeMap::from([(COLLECTION, expected)]);
    testkit::await_collections(db, &wanted, Duration::from_secs(90))
        .await
        .expect("reading gatekeeper")
        .remove(COLLECTION)
        .unwrap_or_default()
}

/// `clinic dlq list --output json`'s entry for `dlq`, once it holds `letters`.
fn await_letters(
    endpoints: &clinic::endpoints::Endpoints,
    prefix: &str,
    extra: &[&str],
    dlq: &str,
    letters: u64,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut args = vec!["dlq", "list", "--output", "json"];
    args.extend_from_slice(extra);
    loop {
        let (code, out) = helpers::clinic(&args, endpoints, prefix);
        assert_eq!(code, 0, "dlq list failed: {out}");
        let counts: serde_json::Value = serde_json::from_str(&out).expect("list's JSON");
        let sink = counts
            .as_array()
            .expect("a list")
            .iter()
            .find(|c| c["topic"] == format!("{prefix}{dlq}"))
            .expect("the DLQ is listed")
            .clone();
        if sink["total"].as_u64() >= Some(letters) {
            return sink;
        }
        assert!(
            Instant::now() < deadline,
            "{dlq} has {} letters, not {letters}",
            sink["total"]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_letters_are_shown_without_personal_data_and_replayed_once_unless_superseded() {
    let endpoints = helpers::stack(&["kafka", "connect", "mongodb"]).await;
    let prefix = format!("{}.", testkit::unique("dlq"));
    let root = testkit::repo_root(0);
    let file = clinic::ops::topics::TopicsFile::load(&root.join("topics.yaml")).expect("topics");
    let topics: Vec<(&str, i32)> = file
        .topics
        .keys()
        .filter(|t| t.ends_with(".dlq") || *t == "dlq.replayed" || *t == TOPIC)
        .map(|t| (t.as_str(), 1))
        .collect();
    testkit::create_topics(&endpoints, &prefix, &topics)
        .await
        .expect("topics");
    let database = testkit::unique("gatekeeper");
    let db = mongodb::Client::with_uri_str(&endpoints.mongo_uri)
        .await
        .expect("client")
        .database(&database);
    let connector = testkit::deploy_deployment_sink(
        &endpoints,
        &root.join("connectors"),
        TOPIC,
        &prefix,
        &database,
    )
    .await
    .expect("sink deployed");
    let connect = Connect::new(&endpoints.connect_url);

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &endpoints.kafka_brokers)
        .create()
        .expect("producer");
    let topic = format!("{prefix}{TOPIC}");
    let clinic = ObjectId::new();
    let (fine, superseded, poison) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
    produce(&producer, &topic, &key(fine), &json(&row("u1", clinic))).await;
    produce(&producer, &topic, &key(superseded), "{not json, u2").await;
    produce(&producer, &topic, &key(poison), "{not json, u3").await;
    produce(
        &producer,
        &topic,
        "u4-without-an-id",
        &json(&row("u4", clinic)),
    )
    .await;
    // A later record of the first poison's key, which the sink writes: that letter is
    // superseded.
    produce(
        &producer,
        &topic,
        &key(superseded),
        &json(&row("u2", clinic)),
    )
    .await;
    let expected = vec![
        doc! { "_id": fine, "userId": "u1", "clinicId": clinic, "permissions": { "view": {} } },
        doc! { "_id": superseded, "userId": "u2", "clinicId": clinic, "permissions": { "view": {} } },
    ];
    let mut sorted = expected.clone();
    sorted.sort_by_key(testkit::id_order);
    assert_eq!(
        settle(&db, expected.clone()).await,
        sorted,
        "the good records are written"
    );
    let sink = tokio::task::block_in_place(|| {
        await_letters(&endpoints, &prefix, &[], "connect.sink.dlq", 3)
    });
    assert_eq!(sink["total"], 3, "{sink}");
    assert_eq!(sink["by_source"][&topic], 3, "{sink}");
    let status = connect
        .status(&connector)
        .await
        .expect("status")
        .expect("known");
    assert!(
        status.tasks.iter().all(|t| t.state == "RUNNING"),
        "the task stopped: {status:?}"
    );

    let (code, shown) = tokio::task::block_in_place(|| {
        helpers::clinic(&["dlq", "show", "--source", &topic], &endpoints, &prefix)
    });
    assert_eq!(code, 0);
    assert!(shown.contains("3 letters"), "{shown}");
    assert!(shown.contains(&format!("from {topic}/0/1")), "{shown}");
    assert!(
        !shown.contains("u2") && !shown.contains("u4") && !shown.contains(&poison.to_hex()),
        "personal data without --reveal:\n{shown}"
    );
    let (_, revealed) = tokio::task::block_in_place(|| {
        helpers::clinic(&["dlq", "show", "--reveal"], &endpoints, &prefix)
    });
    assert!(
        revealed.contains("u4") && revealed.contains(&poison.to_hex()),
        "{revealed}"
    );

    let replay = |extra: &[&str]| {
        let mut args = vec!["dlq", "replay"];
        args.extend_from_slice(extra);
        tokio::task::block_in_place(|| helpers::clinic(&args, &endpoints, &prefix))
    };
    let (code, _) = replay(&[]);
    assert_eq!(code, 2, "a replay without a selection or --all is refused");
    let (code, dry) = replay(&["--all", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(
        dry.contains("would send 2, 0 replayed before, 1 superseded"),
        "{dry}"
    );
    let (code, sent) = replay(&["--all"]);
    assert_eq!(code, 0);
    assert!(
        sent.contains("sent 2, 0 replayed before, 1 superseded"),
        "{sent}"
    );

    // Nothing fixed their cause: both come back, saying what they replay; none is sent twice.
    let sink = tokio::task::block_in_place(|| {
        await_letters(&endpoints, &prefix, &[], "connect.sink.dlq", 5)
    });
    assert_eq!(sink["replayed"], 2, "{sink}");
    let (_, again) = tokio::task::block_in_place(|| {
        helpers::clinic(&["dlq", "show", "--offsets", "3-4"], &endpoints, &prefix)
    });
    assert_eq!(
        again
            .matches("dead-lettered again after a replay of")
            .count(),
        2,
        "{again}"
    );
    let (_, twice) = replay(&["--offsets", "0-2"]);
    assert!(
        twice.contains("sent 0, 2 replayed before, 1 superseded"),
        "{twice}"
    );
    assert_eq!(settle(&db, expected).await, sorted);

    connect.delete(&connector).await.expect("sink removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_processors_letter_replayed_after_the_fix_reaches_the_output_once() {
    let fixture = crate::runner::Fixture::with_topics(
        1,
        &[
            "in",
            "out",
            "counter.dlq",
            "counter.counts.changelog",
            "dlq.replayed",
        ],
    )
    .await;
    let mut topics = tempfile::NamedTempFile::new().expect("a topics file");
    write!(
        topics,
        "defaults: {{ partitions: 1, replication_factor: 1 }}\ntopics:\n  counter.dlq: {{}}\n  dlq.replayed: {{}}\n"
    )
    .expect("written");
    let file = topics.path().to_str().expect("a UTF-8 path").to_owned();
    fixture.produce(0, 5).await;
    fixture
        .produce_raw("neg", br#"{"k": "neg", "seq": -1}"#)
        .await;
    fixture.produce(5, 5).await;

    let (endpoints, prefix) = (&fixture.endpoints, fixture.prefix.as_str());
    let clinic = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--file", &file]);
        helpers::clinic(&all, endpoints, prefix)
    };
    tokio::task::block_in_place(|| {
        let mut counter = fixture.spawn("exactly_once", "0");
        assert_eq!(
            fixture.wait_for("out", 10, Duration::from_secs(60)).len(),
            10
        );
        let letters = await_letters(endpoints, prefix, &["--file", &file], "counter.dlq", 1);
        assert_eq!(letters["by_reason"]["poison"], 1, "{letters}");
        assert_eq!(letters["by_source"][fixture.topic("in")], 1, "{letters}");
        assert!(crate::runner::terminate(&mut counter).success());

        // The fixed version runs; the letter goes home, once.
        let mut fixed =
            fixture.spawn_with("exactly_once", "0", &[("COUNTER_ACCEPT_NEGATIVE", "1")]);
        let (code, sent) = clinic(&["dlq", "replay", "--source", &fixture.topic("in")]);
        assert_eq!(code, 0);
        assert!(
            sent.contains("sent 1, 0 replayed before, 0 superseded"),
            "{sent}"
        );
        let (_, again) = clinic(&["dlq", "replay", "--all"]);
        assert!(again.contains("sent 0, 1 replayed before"), "{again}");
        fixture.wait_for("out", 11, Duration::from_secs(60));
        // A second copy would have come by now.
        std::thread::sleep(Duration::from_secs(2));
        let out = fixture.read("out", usize::MAX, Duration::from_secs(3));
        assert!(crate::runner::terminate(&mut fixed).success());
        let negative: Vec<_> = out
            .iter()
            .filter(|(key, _)| key.as_deref() == Some("neg"))
            .collect();
        assert_eq!(out.len(), 11, "every record once");
        assert_eq!(negative.len(), 1, "the replayed record once");
    });
}
