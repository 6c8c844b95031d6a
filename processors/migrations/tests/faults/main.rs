//! Fault injection on the real chain: the 1,000-patient migration of the stack tests, with the
//! broker SIGKILLed while the `clinic-migrations` binary is midway and started again. The
//! processor waits (it says so on `/readyz`) without exiting or logging an ERROR, and its
//! committed output is exact: every migrated patient document, share tombstone and email request
//! once, the migration RUNNING then COMPLETED. (The output is checked on the topics: after a
//! broker kill the sink connectors' tasks may need the connectors watch to restart them, which
//! the database faults test of permissions covers.) The gate's reader and the repartition purge
//! run beside the runner's own clients here (migrations has `after_others` inputs and
//! repartition topics), so their clients' conduct in an outage is checked too.
//!
//! The test stops the broker every other test uses, so it lives in its own test binary (cargo
//! runs test binaries one at a time).

// The whole-chain helpers; this test checks the topics, not the databases.
#[path = "../chain/mod.rs"]
#[allow(dead_code)]
mod chain;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clinic::endpoints::Endpoints;
use clinic::streams::{Processor as _, sink_key};
use clinic::testkit;
use clinic_migrations::processor::{Migrations, SINK_MIGRATIONS, SINK_PATIENTS, SINK_PERMS};

use crate::chain::{World, metrics, start, statuses, world};

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_killed_midway_and_restarted_leaves_the_migration_exact() {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let world = world();
    let chain = chain::chain(&endpoints, &world).await;
    let logs = tempfile::tempdir().expect("temp dir");
    // Chunks of 10: a hundred steps, so the broker goes in the middle.
    let mut processor = start(&endpoints, &chain, &logs.path().join("run.log"), "10");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !metrics(&processor)
        .await
        .contains("clinic_migrations_shares_moved_total")
    {
        assert!(Instant::now() < deadline, "nothing moved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !metrics(&processor)
            .await
            .contains("clinic_migrations_finished_total"),
        "the migration had finished already; the broker must go midway"
    );
    testkit::stack(2, "stop", "kafka", Some("--kill"));
    let http = reqwest::Client::new();
    let (mut waited, away) = (false, Instant::now());
    while away.elapsed() < Duration::from_secs(15) {
        if let Ok(answer) = http
            .get(format!("http://{}/readyz", processor.admin))
            .send()
            .await
            && answer.status() == 503
        {
            waited |= answer
                .text()
                .await
                .is_ok_and(|t| t.contains("waiting for the broker"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let during = processor.exited();
    testkit::stack(2, "start", "kafka", None);
    let back = Instant::now();
    assert!(
        during.is_none(),
        "the processor exited ({during:?}) while the broker was away:\n{}",
        std::fs::read_to_string(&processor.log).unwrap_or_default()
    );
    assert!(
        waited,
        "/readyz never said it waited for the broker:\n{}",
        std::fs::read_to_string(&processor.log).unwrap_or_default()
    );

    let brokers = endpoints.kafka_brokers.clone();
    let runs = format!("{}{SINK_MIGRATIONS}", chain.prefix);
    let deadline = Instant::now() + Duration::from_secs(240);
    while !statuses(&brokers, &runs)
        .values()
        .any(|s| s.iter().any(|s| s == "COMPLETED"))
    {
        assert!(
            Instant::now() < deadline,
            "not COMPLETED within 240 s of the broker's return:\n{}",
            std::fs::read_to_string(&processor.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "broker away 15 s; the migration committed COMPLETED {:?} after it came back",
        back.elapsed()
    );
    // Everything read (a repeat would be committed by now), then a clean stop.
    let topology = Migrations::new(Default::default(), Default::default()).topology();
    let (waited, scope) = (brokers.clone(), chain.prefix.clone());
    tokio::task::spawn_blocking(move || {
        testkit::await_processed(&waited, &scope, &topology, Duration::from_secs(120));
    })
    .await
    .expect("the inputs read");
    let (status, log) = processor.stop();
    assert!(status.success(), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors, Vec::<&str>::new(), "ERROR lines in the log");
    committed_exactly(&brokers, &chain.prefix, &world);
    testkit::remove_sinks(&endpoints, &chain.sinks)
        .await
        .expect("remove connectors");
}

/// The processor's committed output: each migrated patient, tombstone and request once, the
/// migration RUNNING then COMPLETED.
fn committed_exactly(brokers: &str, prefix: &str, world: &World) {
    let once = |keys: Vec<String>| -> BTreeMap<String, usize> {
        keys.into_iter().map(|k| (k, 1)).collect()
    };
    let id = |d: &bson::Document| sink_key(d.get("_id").expect("_id"));
    let existing = id(&world.existing);
    let patients: Vec<String> = world
        .expected_patients
        .iter()
        .map(id)
        .filter(|k| *k != existing)
        .collect();
    assert_eq!(
        testkit::key_counts(brokers, &format!("{prefix}{SINK_PATIENTS}"), false),
        once(patients)
    );
    // Every share but the clinician's own row.
    let shares: Vec<String> = world.perms[1..].iter().map(id).collect();
    assert_eq!(
        testkit::key_counts(brokers, &format!("{prefix}{SINK_PERMS}"), true),
        once(shares)
    );
    let requests = testkit::key_counts(
        brokers,
        &format!("{prefix}{}", clinic::email::REQUESTS_TOPIC),
        false,
    );
    assert_eq!(
        requests.len(),
        world.perms.len(),
        "one request per patient and the clinician"
    );
    assert!(
        requests.values().all(|n| *n == 1),
        "a request repeated: {requests:?}"
    );
    let migration = sink_key(world.migration.get("_id").expect("_id"));
    assert_eq!(
        statuses(brokers, &format!("{prefix}{SINK_MIGRATIONS}")),
        BTreeMap::from([(
            migration,
            vec!["RUNNING".to_owned(), "COMPLETED".to_owned()]
        )])
    );
}
