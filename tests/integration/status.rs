//! `clinic status` and `clinic connectors watch` as binaries on the local stack: a processor
//! (the runtime's counter example) reports its partitions, lag and dead letters through its
//! admin `/status`; a sink connector that cannot write shows `FAILED` with the
//! first line of its trace and makes the status exit 3; the watch restarts it, logs it and
//! counts it in its metrics, and stops on SIGTERM with exit 0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clinic::ops::connectors::Connect;
use clinic::testkit;

use crate::helpers;
use crate::runner::{Fixture, terminate};

const TOPIC: &str = "sink.gatekeeper.patient_permissions";

/// `clinic status --output json` (its exit code and document) until `done` accepts it.
fn status_until(
    fixture: &Fixture,
    processors: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> (i32, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, out) = helpers::clinic_with(
            &["status", "--output", "json"],
            &fixture.endpoints,
            &fixture.prefix,
            &[("CLINIC_PROCESSORS", processors)],
        );
        let status: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
        if done(&status) {
            return (code, status);
        }
        assert!(
            Instant::now() < deadline,
            "status never settled: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_processors_and_failed_tasks_and_the_watch_restarts_them() {
    let fixture = Fixture::with_topics(
        2,
        &[
            "in",
            "out",
            "counter.dlq",
            "counter.counts.changelog",
            TOPIC,
            "connect.sink.dlq",
        ],
    )
    .await;
    fixture.produce(0, 50).await;
    fixture
        .produce_raw("neg", br#"{"k": "neg", "seq": -1}"#)
        .await;

    // A sink that cannot write: a unique index the record breaks. (FerretDB's answer to that
    // write lacks a field the driver expects, so the connector fails its task, as it does when
    // the database is away; MongoDB's answer would dead-letter the record instead.)
    let database = testkit::unique("status");
    let rows = mongodb::Client::with_uri_str(&fixture.endpoints.mongo_uri)
        .await
        .expect("client")
        .database(&database)
        .collection::<bson::Document>("patient_permissions");
    rows.create_index(
        mongodb::IndexModel::builder()
            .keys(bson::doc! { "userId": 1 })
            .options(
                mongodb::options::IndexOptions::builder()
                    .unique(true)
                    .build(),
            )
            .build(),
    )
    .await
    .expect("unique index");
    rows.insert_one(bson::doc! { "userId": "u1" })
        .await
        .expect("a row holding u1");
    let root = testkit::repo_root(0);
    let connector = testkit::deploy_deployment_sink(
        &fixture.endpoints,
        &root.join("connectors"),
        TOPIC,
        &fixture.prefix,
        &database,
    )
    .await
    .expect("sink deployed");
    let connect = Connect::new(&fixture.endpoints.connect_url);
    fixture
        .produce_to(
            TOPIC,
            r#"{"_id": {"$oid": "5f0c2f6b9d1e8a0a3c8b4567"}}"#,
            br#"{"userId": "u1"}"#,
        )
        .await;

    let admin = helpers::free_port();
    let processors = format!("counter=http://127.0.0.1:{admin}");
    tokio::task::block_in_place(|| {
        let mut counter = fixture.spawn_with(
            "exactly_once",
            "0",
            &[("COUNTER_ADMIN_ADDR", &format!("127.0.0.1:{admin}"))],
        );
        let ours = |status: &serde_json::Value, name: &str| {
            status["connectors"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["name"] == name).cloned())
        };
        let (code, status) = status_until(&fixture, &processors, |status| {
            let processor = &status["processors"][0];
            let failed = ours(status, &connector).is_some_and(|c| c["tasks"][0][1] == "FAILED");
            processor["ready"] == true
                && processor["dead_letters"] == 1
                && processor["lag"][fixture.topic("in")] == 0
                && failed
        });
        let processor = &status["processors"][0];
        assert_eq!(
            processor["partitions"][fixture.topic("in")],
            2,
            "{status:#}"
        );
        for dependency in status["dependencies"].as_array().expect("dependencies") {
            assert_eq!(dependency["ok"], true, "{dependency}");
        }
        assert_eq!(code, 3, "a failed task is unhealthy");
        let task = &ours(&status, &connector).expect("listed")["tasks"][0];
        assert!(
            task[2].as_str().is_some_and(|t| t.contains("Exception")),
            "the first line of the trace: {task}"
        );
        assert!(
            status["problems"]
                .as_array()
                .expect("problems")
                .iter()
                .any(|p| p.as_str() == Some(&format!("connector {} is not running", connector))),
            "{status:#}"
        );

        // The watch, over this deployment's connectors: it restarts the task (which fails
        // again, nothing having changed) and counts it.
        let watch_admin = helpers::free_port();
        let mut watch = Command::new(env!("CARGO_BIN_EXE_clinic"))
            .args([
                "connectors",
                "watch",
                "--interval",
                "1",
                "--first-backoff",
                "1",
            ])
            .args(["--admin", &format!("127.0.0.1:{watch_admin}")])
            .env("CLINIC_CONNECT_URL", &fixture.endpoints.connect_url)
            .env("CLINIC_TOPIC_PREFIX", &fixture.prefix)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("clinic connectors watch runs");
        let metric = format!(
            "clinic_connect_restarts_total{{connector=\"{}\"}}",
            connector
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let metrics = helpers::http_get(&format!("http://127.0.0.1:{watch_admin}/metrics"));
            let restarts = metrics
                .lines()
                .find_map(|l| l.strip_prefix(&metric))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            if restarts >= 2.0 {
                break;
            }
            assert!(Instant::now() < deadline, "no second restart:\n{metrics}");
            std::thread::sleep(Duration::from_millis(500));
        }
        assert!(terminate(&mut watch).success(), "the watch stops cleanly");
        let mut log = String::new();
        std::io::Read::read_to_string(&mut watch.stderr.take().expect("stderr"), &mut log)
            .expect("the watch's log");
        assert!(log.contains("Restarted a failed connector task."), "{log}");
        assert!(terminate(&mut counter).success());
    });
    connect.delete(&connector).await.expect("sink removed");
}
