//! The effect stage against the real broker: every request is performed, an executor SIGKILLed
//! mid-run repeats at most the effect in flight, permanent failures and malformed requests are
//! dead-lettered once, transient failures are retried. The stage under test is
//! `examples/effect_journal.rs`, whose effect appends the request's number to a synced file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::runner::{Fixture, example_binary, kill, terminate};

const REQUESTS: u64 = 1_000;
const KILLS: usize = 6;
/// The request that fails transiently three times before it succeeds.
const FLAKY: u64 = 1_000_000;

fn spawn(fixture: &Fixture, journal: &Path) -> Child {
    Command::new(example_binary("effect_journal"))
        .env("CLINIC_KAFKA_BROKERS", &fixture.endpoints.kafka_brokers)
        .env("JOURNAL_PREFIX", &fixture.prefix)
        .env("JOURNAL_FILE", journal)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the effect_journal example is built by cargo test")
}

/// Each number in the journal, and how many times it was written.
fn journal(path: &Path) -> BTreeMap<u64, usize> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        *counts
            .entry(line.parse::<u64>().expect("a number per line"))
            .or_default() += 1;
    }
    counts
}

async fn produce(fixture: &Fixture, requests: &[(String, Vec<u8>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &fixture.endpoints.kafka_brokers)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let topic = fixture.topic("requests");
    let sends = requests.iter().map(|(key, value)| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(&topic).key(key).payload(value),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("produced");
        }
    });
    futures::future::join_all(sends).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkilled_stage_performs_every_request_and_repeats_at_most_the_one_in_flight() {
    let fixture = Fixture::with_topics(3, &["requests", "journal.done", "journal.dlq"]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.txt");
    let mut requests: Vec<(String, Vec<u8>)> = (0..REQUESTS)
        .map(|n| (format!("r{n}"), format!(r#"{{"n": {n}}}"#).into_bytes()))
        .collect();
    requests.push(("refused".into(), br#"{"refuse": true}"#.to_vec()));
    requests.push(("garbled".into(), b"not a request".to_vec()));
    requests.push((
        "flaky".into(),
        format!(r#"{{"n": {FLAKY}, "flaky": 3}}"#).into_bytes(),
    ));
    produce(&fixture, &requests).await;
    let expected: BTreeSet<u64> = (0..REQUESTS).chain([FLAKY]).collect();

    let (at_kills, duplicates) = tokio::task::block_in_place(|| {
        let mut child = spawn(&fixture, &path);
        let mut at_kills = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(std::process::id());
        for _ in 0..KILLS {
            // xorshift: killed once it has performed 1 to 100 more requests, so mid-effect.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let target = journal(&path).values().sum::<usize>() + 1 + (seed % 100) as usize;
            let deadline = Instant::now() + Duration::from_secs(60);
            while journal(&path).values().sum::<usize>() < target {
                assert!(
                    Instant::now() < deadline,
                    "no progress within 60 s of a restart"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            kill(&mut child);
            at_kills.push(journal(&path).values().sum::<usize>());
            child = spawn(&fixture, &path);
        }
        let deadline = Instant::now() + Duration::from_secs(180);
        while journal(&path).keys().copied().collect::<BTreeSet<_>>() != expected {
            if let Some(status) = child.try_wait().expect("wait") {
                panic!("the stage exited ({status}) before performing every request");
            }
            assert!(
                Instant::now() < deadline,
                "not every request was performed within 180 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let status = terminate(&mut child);
        assert!(
            status.success(),
            "SIGTERM should end the stage with exit 0, got {status}"
        );
        let written = journal(&path);
        let duplicates: usize = written.values().map(|times| times - 1).sum();
        (at_kills, duplicates)
    });

    eprintln!(
        "effects: {} requests, {KILLS} SIGKILLs (journal lines at each: {at_kills:?}), {duplicates} repeated",
        expected.len()
    );
    assert!(
        at_kills.last().is_some_and(|&lines| lines < expected.len()),
        "the last kill came after the work was done, proving nothing: {at_kills:?}"
    );
    assert!(
        duplicates <= KILLS,
        "{duplicates} effects repeated after {KILLS} crashes: more than the one in flight each"
    );
    let dead: BTreeSet<String> = fixture
        .read("journal.dlq", usize::MAX, Duration::from_secs(3))
        .into_iter()
        .filter_map(|(key, _)| key)
        .collect();
    assert_eq!(
        dead,
        BTreeSet::from(["garbled".to_owned(), "refused".to_owned()])
    );
}
