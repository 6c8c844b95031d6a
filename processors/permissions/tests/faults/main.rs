//! Fault injection on the real chain: the `clinic-permissions` binary (exactly-once), the
//! repository's gatekeeper sink connectors and FerretDB, while a component of the local stack is
//! taken away (`scripts/stack stop|start`). Each run compares the whole gatekeeper collections
//! with the ones computed independently from the final documents, and counts what reached the
//! processor's DLQ and Connect's sink DLQ (both must stay empty: every record is good).
//!
//! These tests stop the broker, the registry and the database that every other test uses, so
//! they live in their own test binary (cargo runs test binaries one at a time) and run one at a
//! time. The processor logs at `info` (its log is checked); `CLINIC_FAULTS_RUST_LOG` sets another
//! filter for a closer look (e.g. `info,clinic=debug`), printed with `--nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{Bson, Document, doc};
use clinic::cdc::{ChangeEvent, Operation};
use clinic::endpoints::Endpoints;
use clinic::ops::connectors::Connect;
use clinic::ops::watch::{Watch, WatchSettings};
use clinic::streams::Processor as _;
use clinic::testkit::{self, SinkChain};
use clinic_permissions::config::Inputs;
use clinic_permissions::processor::Permissions;
use rdkafka::ClientConfig;
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// One fault test at a time: each takes a shared component away.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SINKS: [&str; 2] = [
    "sink.gatekeeper.patient_permissions",
    "sink.gatekeeper.clinician_permissions",
];

/// `scripts/stack <action> <component> [flag]`, from the repository.
fn stack(action: &str, component: &str, flag: Option<&str>) {
    testkit::stack(2, action, component, flag);
}

/// The change events of a workload, in three batches (inserts and a first change; a second
/// change; a third change and the deletions), and the gatekeeper collections they must leave,
/// computed from the final documents (not by the processor's code).
struct Workload {
    batches: [Vec<(&'static str, ChangeEvent)>; 3],
    expected: BTreeMap<&'static str, Vec<Document>>,
}

impl Workload {
    fn events(&self) -> usize {
        self.batches.iter().map(Vec::len).sum()
    }
}

/// An update reports the whole new document as its updated fields (updateLookup included).
fn change(operation: Operation, coll: &str, id: ObjectId, full: Option<Document>) -> ChangeEvent {
    let updated = match (&operation, &full) {
        (Operation::Update, Some(full)) => full.clone(),
        _ => doc! {},
    };
    ChangeEvent {
        updated_fields: updated,
        ..testkit::change(operation, coll, id, full)
    }
}

/// `patients` patients and `patients / 10` clinicians over three clinics: inserts, three
/// permission changes each (some to none), role changes, invites, deletions.
fn workload(patients: usize) -> Workload {
    let clinics = [ObjectId::new(), ObjectId::new(), ObjectId::new()];
    let grants: [&[&str]; 5] = [
        &["view", "upload"],
        &["view"],
        &[],
        &["custodian", "view"],
        &["note", "upload", "view"],
    ];
    let permissions = |names: &[&str]| -> Document {
        names
            .iter()
            .map(|n| ((*n).to_owned(), Bson::Document(Document::new())))
            .collect()
    };
    let mut batches: [Vec<(&'static str, ChangeEvent)>; 3] = Default::default();
    let mut patient_rows = Vec::new();
    for i in 0..patients {
        let id = ObjectId::new();
        let clinic = clinics[i % 3];
        let user = (i % 11 != 0).then(|| format!("u{i}"));
        let document = |names: &[&str]| {
            let mut d = doc! { "_id": id, "clinicId": clinic, "fullName": format!("Patient {i}"), "birthDate": "2001-02-03", "permissions": permissions(names) };
            if let Some(user) = &user {
                d.insert("userId", user);
            }
            d
        };
        batches[0].push((
            "clinic.patients",
            change(
                Operation::Insert,
                "patients",
                id,
                Some(document(grants[i % 5])),
            ),
        ));
        let mut last = grants[i % 5];
        for k in 1..=3 {
            last = grants[(i + k) % 5];
            let event = change(Operation::Update, "patients", id, Some(document(last)));
            batches[k - 1].push(("clinic.patients", event));
        }
        if i % 10 == 3 {
            batches[2].push((
                "clinic.patients",
                change(Operation::Delete, "patients", id, None),
            ));
        } else if let Some(user) = &user
            && !last.is_empty()
        {
            patient_rows.push(doc! { "_id": id, "userId": user, "clinicId": clinic, "permissions": permissions(last) });
        }
    }
    let mut clinician_rows = Vec::new();
    for j in 0..patients / 10 {
        let id = ObjectId::new();
        let clinic = clinics[j % 3];
        let document = |role: &str| {
            let mut d = doc! { "_id": id, "clinicId": clinic, "name": format!("Doctor {j}"), "roles": [role] };
            if j % 6 == 0 {
                d.insert("inviteId", format!("invite-{j}"));
            } else {
                d.insert("userId", format!("d{j}"));
            }
            d
        };
        batches[0].push((
            "clinic.clinicians",
            change(
                Operation::Insert,
                "clinicians",
                id,
                Some(document("CLINIC_MEMBER")),
            ),
        ));
        let role = if j % 2 == 0 {
            "CLINIC_ADMIN"
        } else {
            "CLINIC_MEMBER"
        };
        batches[1].push((
            "clinic.clinicians",
            change(Operation::Update, "clinicians", id, Some(document(role))),
        ));
        if j % 5 == 4 {
            batches[2].push((
                "clinic.clinicians",
                change(Operation::Delete, "clinicians", id, None),
            ));
        } else if j % 6 != 0 {
            clinician_rows.push(
                doc! { "_id": id, "userId": format!("d{j}"), "clinicId": clinic, "roles": [role] },
            );
        }
    }
    Workload {
        batches,
        expected: BTreeMap::from([
            ("patient_permissions", patient_rows),
            ("clinician_permissions", clinician_rows),
        ]),
    }
}

/// Topics under a fresh prefix, the gatekeeper sinks on a fresh database.
struct Chain {
    endpoints: Endpoints,
    prefix: String,
    db: mongodb::Database,
    sinks: Vec<String>,
    logs: tempfile::TempDir,
}

impl Chain {
    async fn new() -> Self {
        let endpoints = Endpoints::from_env().expect("endpoints");
        let names = testkit::topics_of(&Permissions::new(Inputs::default()).topology());
        let topics: Vec<(&str, i32)> = names.iter().map(|t| (t.as_str(), 2)).collect();
        let SinkChain { prefix, db, sinks } =
            SinkChain::new(&endpoints, "faults", &testkit::repo_root(2), &topics, |t| {
                SINKS.contains(&t)
            })
            .await
            .expect("topics, sinks, database");
        Self {
            endpoints,
            prefix,
            db,
            sinks,
            logs: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Starts `clinic-permissions` on the chain; its stderr goes to `<logs>/processor.log`.
    fn start_processor(&self) -> Processor {
        Processor(testkit::Spawned::start(
            std::path::Path::new(env!("CARGO_BIN_EXE_clinic-permissions")),
            &self.endpoints,
            &self.prefix,
            self.logs.path().join("processor.log"),
            &std::env::var("CLINIC_FAULTS_RUST_LOG").unwrap_or("info".into()),
            &[],
        ))
    }

    /// Waits (up to a minute) until the first gatekeeper rows are written: the run is under way.
    async fn await_first_rows(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while testkit::collection(&self.db, "patient_permissions")
            .await
            .expect("read")
            .is_empty()
        {
            assert!(Instant::now() < deadline, "nothing reached gatekeeper");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn publish(&self, events: &[(&str, ChangeEvent)]) {
        testkit::publish_changes(&self.endpoints, &self.prefix, events)
            .await
            .expect("publish");
    }

    /// Waits (up to `timeout`) for the collections to equal `expected`; what they held last.
    async fn settle(
        &self,
        expected: &BTreeMap<&str, Vec<Document>>,
        timeout: Duration,
    ) -> BTreeMap<String, Vec<Document>> {
        testkit::await_collections(&self.db, expected, timeout)
            .await
            .expect("reading gatekeeper")
    }

    /// Records in the processor's DLQ, and in Connect's sink DLQ from this chain's sinks.
    fn dead_letters(&self) -> (usize, usize) {
        let ours: BTreeSet<String> = SINKS
            .iter()
            .map(|s| format!("{}{s}", self.prefix))
            .collect();
        let processor = read_all(
            &self.endpoints.kafka_brokers,
            &format!("{}permissions.dlq", self.prefix),
        )
        .len();
        let sinks = read_all(&self.endpoints.kafka_brokers, "connect.sink.dlq")
            .into_iter()
            .filter(|headers| {
                headers
                    .get("__connect.errors.topic")
                    .is_some_and(|t| ours.contains(t))
            })
            .count();
        (processor, sinks)
    }

    /// The sink connectors' and their tasks' states, for a run whose collections are wrong.
    async fn sink_states(&self) -> Vec<String> {
        let connect = Connect::new(&self.endpoints.connect_url);
        let mut states = Vec::new();
        for name in &self.sinks {
            let state = match connect.status(name).await {
                Ok(Some(status)) => {
                    let tasks: Vec<&str> = status.tasks.iter().map(|t| t.state.as_str()).collect();
                    format!("{} (tasks {tasks:?})", status.connector.state)
                }
                Ok(None) => "missing".to_owned(),
                Err(error) => format!("unknown: {error}"),
            };
            states.push(format!("{name}: {state}"));
        }
        states
    }

    async fn remove(self) {
        testkit::remove_sinks(&self.endpoints, &self.sinks)
            .await
            .expect("remove connectors");
    }
}

fn sorted(expected: &BTreeMap<&str, Vec<Document>>) -> BTreeMap<String, Vec<Document>> {
    expected
        .iter()
        .map(|(name, docs)| {
            let mut docs = docs.clone();
            docs.sort_by_key(testkit::id_order);
            ((*name).to_owned(), docs)
        })
        .collect()
}

/// The headers of every committed record of `topic` (all partitions).
fn read_all(brokers: &str, topic: &str) -> Vec<BTreeMap<String, String>> {
    testkit::read_topic(brokers, topic)
        .iter()
        .map(|message| {
            message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                            (h.key.to_owned(), value.into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect()
}

/// A running `clinic-permissions`.
struct Processor(testkit::Spawned);

impl Processor {
    /// `/readyz`'s status and text (`None` while it does not answer).
    async fn readyz(&self) -> Option<(u16, String)> {
        let response = reqwest::get(format!("http://{}/readyz", self.0.admin))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.unwrap_or_default()))
    }

    /// Whether it exited (it must not, whatever the fault).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.exited()
    }

    /// SIGTERM; its exit status and its log.
    fn stop(self) -> (std::process::ExitStatus, String) {
        self.0.stop()
    }
}

/// Polls `/readyz` for `during`; whether it ever said it was waiting for `dependency`.
async fn watch_readyz(processor: &Processor, during: Duration, dependency: &str) -> bool {
    let deadline = Instant::now() + during;
    let mut seen = false;
    while Instant::now() < deadline {
        if let Some((503, text)) = processor.readyz().await {
            seen |= text.contains(&format!("waiting for the {dependency}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    seen
}

fn lines_at<'a>(log: &'a str, level: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(level)).collect()
}

/// What a dependency outage run saw, checked the same way for every dependency.
struct Outage {
    dependency: &'static str,
    events: usize,
    away: Duration,
    caught_up: Duration,
    /// Whether the processor had exited while the dependency was away.
    during: Option<std::process::ExitStatus>,
    /// Whether `/readyz` said it waited for the dependency.
    waited: bool,
    seen: BTreeMap<String, Vec<Document>>,
}

impl Outage {
    /// Stops the processor, removes the chain, prints the figures, and checks: the processor
    /// never exited and stops cleanly, `/readyz` said what it waited for, the collections are
    /// exactly the expected ones, nothing was dead-lettered, no ERROR line was logged.
    async fn check(
        self,
        mut processor: Processor,
        chain: Chain,
        expected: &BTreeMap<&str, Vec<Document>>,
    ) {
        let after = processor.exited();
        let (status, log) = processor.stop();
        let dead = chain.dead_letters();
        let sinks = chain.sink_states().await;
        chain.remove().await;
        let Self {
            dependency,
            events,
            away,
            caught_up,
            during,
            waited,
            seen,
        } = self;
        eprintln!(
            "{dependency} outage: {events} events, {dependency} away {away:?}, caught up {caught_up:?} after it was back; \
             WARN lines {}, ERROR lines {}; sinks {sinks:?}; the processor's log:\n{log}",
            lines_at(&log, "WARN").len(),
            lines_at(&log, "ERROR").len(),
        );
        assert_eq!(
            during, None,
            "the processor exited during the outage:\n{log}"
        );
        assert_eq!(after, None, "the processor exited after the outage:\n{log}");
        assert!(
            waited,
            "/readyz never said it waited for the {dependency}:\n{log}"
        );
        let expected = sorted(expected);
        for (name, want) in &expected {
            let got = seen.get(name).map_or(&[][..], Vec::as_slice);
            let missing = want.iter().filter(|d| !got.contains(d)).count();
            let extra = got.iter().filter(|d| !want.contains(d)).count();
            if missing + extra > 0 {
                eprintln!(
                    "{name}: {} expected, {} seen, {missing} missing or different, {extra} extra or different",
                    want.len(),
                    got.len()
                );
            }
        }
        assert_eq!(seen, expected);
        assert_eq!(dead, (0, 0), "records dead-lettered (processor, sinks)");
        assert!(status.success(), "stopping failed ({status}):\n{log}");
        assert_eq!(lines_at(&log, "ERROR"), Vec::<&str>::new());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_outage_while_the_processor_starts_loses_nothing_and_dead_letters_nothing() {
    let _serial = SERIAL.lock().await;
    let chain = Chain::new().await;
    let work = workload(300);
    for batch in &work.batches {
        chain.publish(batch).await;
    }
    let events = work.events();

    // The processor starts while the registry is away (it has no schema cached): it must wait,
    // giving up its transaction before the transaction's timeout, and never dead-letter.
    stack("stop", "registry", None);
    let started = Instant::now();
    let mut processor = chain.start_processor();
    let waited = watch_readyz(&processor, Duration::from_secs(30), "registry").await;
    let during = processor.exited();
    stack("start", "registry", None);
    let away = started.elapsed();
    let back = Instant::now();
    let seen = chain.settle(&work.expected, Duration::from_secs(180)).await;
    Outage {
        dependency: "registry",
        events,
        away,
        caught_up: back.elapsed(),
        during,
        waited,
        seen,
    }
    .check(processor, chain, &work.expected)
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_killed_and_restarted_mid_run_loses_nothing_and_the_processor_resumes() {
    let _serial = SERIAL.lock().await;
    let chain = Chain::new().await;
    let work = workload(300);
    chain.publish(&work.batches[0]).await;
    let events = work.events();
    let mut processor = chain.start_processor();
    // Mid-run: rows are being written, and a batch is in flight when the broker dies.
    chain.await_first_rows().await;
    chain.publish(&work.batches[1]).await;
    stack("stop", "kafka", Some("--kill"));
    let killed = Instant::now();
    let waited = watch_readyz(&processor, Duration::from_secs(20), "broker").await;
    let during = processor.exited();
    stack("start", "kafka", None);
    let away = killed.elapsed();
    let back = Instant::now();
    chain.publish(&work.batches[2]).await;
    let seen = chain.settle(&work.expected, Duration::from_secs(240)).await;
    Outage {
        dependency: "broker",
        events,
        away,
        caught_up: back.elapsed(),
        during,
        waited,
        seen,
    }
    .check(processor, chain, &work.expected)
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_records_are_dead_lettered_without_personal_data_in_the_logs() {
    let _serial = SERIAL.lock().await;
    let chain = Chain::new().await;
    let id = ObjectId::new();
    let personal = doc! { "_id": id, "clinicId": ObjectId::new(), "userId": "user-5f3a9c", "fullName": "Ada Lovelace-Byron", "birthDate": "1815-12-10", "mrn": "MRN-778899", "email": "ada@example.org", "permissions": "everything" };
    // A decodable event whose document is invalid (permissions not a document), and the same
    // event truncated mid-record (undecodable), both as the source connector frames them.
    chain
        .publish(&[(
            "clinic.patients",
            change(Operation::Insert, "patients", id, Some(personal)),
        )])
        .await;
    let framed = read_values(
        &chain.endpoints.kafka_brokers,
        &format!("{}clinic.patients", chain.prefix),
    );
    let truncated = &framed[0][..framed[0].len() - 20];
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &chain.endpoints.kafka_brokers)
        .create()
        .expect("producer");
    let key = format!(r#"{{"_id": {{"$oid": "{}"}}}}"#, id.to_hex());
    producer
        .send(
            FutureRecord::to(&format!("{}clinic.patients", chain.prefix))
                .key(&key)
                .payload(truncated),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce");

    let processor = chain.start_processor();
    let deadline = Instant::now() + Duration::from_secs(60);
    while chain.dead_letters().0 < 2 {
        assert!(
            Instant::now() < deadline,
            "the poison records did not reach the DLQ"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (status, log) = processor.stop();
    chain.remove().await;

    assert!(status.success(), "stopping failed ({status}):\n{log}");
    for value in [
        "user-5f3a9c",
        "Ada Lovelace",
        "1815-12-10",
        "MRN-778899",
        "ada@example.org",
    ] {
        assert!(!log.contains(value), "the log shows {value:?}:\n{log}");
    }
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    // Where instead: one WARN per record, naming topic, partition and offset.
    let said = lines_at(&log, "Record dead-lettered.");
    assert_eq!(said.len(), 2, "{log}");
    assert!(said.iter().all(|l| l.contains("offset=")), "{log}");
}

/// The values of every committed record of `topic`.
fn read_values(brokers: &str, topic: &str) -> Vec<Vec<u8>> {
    testkit::read_topic(brokers, topic)
        .iter()
        .filter_map(|m| m.payload().map(<[u8]>::to_vec))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_away_for_60_s_heals_without_a_person_under_the_connectors_watch() {
    let _serial = SERIAL.lock().await;
    let chain = Chain::new().await;
    let connect = Connect::new(&chain.endpoints.connect_url);
    let work = workload(300);
    chain.publish(&work.batches[0]).await;
    let processor = chain.start_processor();
    chain.await_first_rows().await;
    // `clinic connectors watch` as the chart runs it (its default intervals), over this chain's
    // sinks (named `test-mongo-sink-gatekeeper-…`).
    let (stop_watch, stopped_watch) = tokio::sync::oneshot::channel::<()>();
    let watch = tokio::spawn(
        Watch::new(
            &chain.endpoints.connect_url,
            WatchSettings {
                prefix: "test-mongo-sink-gatekeeper-".into(),
                ..WatchSettings::default()
            },
        )
        .run(async {
            stopped_watch.await.ok();
        }),
    );

    // The sinks cannot write: the driver waits for a server (30 s), then the task fails
    // instead of dead-lettering the records it holds; the watch restarts it, and it waits again.
    stack("stop", "ferretdb", Some("--kill"));
    let stopped = Instant::now();
    chain.publish(&work.batches[1]).await;
    chain.publish(&work.batches[2]).await;
    let mut failed = BTreeSet::new();
    let mut failed_after = None;
    while stopped.elapsed() < Duration::from_secs(60) {
        for name in &chain.sinks {
            let status = connect.status(name).await.expect("status");
            if status.is_some_and(|s| s.tasks.iter().any(|t| t.state == "FAILED")) {
                failed.insert(name.clone());
                failed_after.get_or_insert(stopped.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stack("start", "ferretdb", None);
    let back = Instant::now();
    let seen = chain.settle(&work.expected, Duration::from_secs(180)).await;
    let exact = back.elapsed();
    stop_watch.send(()).ok();
    let restarts = watch.await.expect("the watch ran");
    let (status, log) = processor.stop();
    let dead = chain.dead_letters();
    let chain_sinks = chain.sinks.len();
    chain.remove().await;

    eprintln!(
        "database away 60 s: {} events, a sink task first failed {failed_after:?} after the database went away ({} of {} sinks), {restarts} restarts by the watch, collections exact {exact:?} after the database was back",
        work.events(),
        failed.len(),
        chain_sinks
    );
    assert!(
        restarts >= 1,
        "the watch restarted nothing: no sink task failed ({} seen failed)",
        failed.len()
    );
    assert_eq!(seen, sorted(&work.expected));
    assert_eq!(dead, (0, 0), "records dead-lettered (processor, sinks)");
    assert!(status.success(), "stopping failed ({status}):\n{log}");
}
