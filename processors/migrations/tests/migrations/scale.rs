//! On the local stack: the `clinic-migrations` binary as three instances sharing the work (three
//! partitions), one SIGKILLed while migrations run and a fourth added. Six legacy clinicians
//! migrate into six clinics (some patients shared with two of them); every migration is RUNNING
//! then COMPLETED exactly once in the committed output, every migrated patient document, share
//! tombstone and email request is there exactly once, whichever instances held the clinicians,
//! patients and clinics, and nothing else is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, doc};
use clinic::cdc::{ChangeEvent, Operation};
use clinic::endpoints::Endpoints;
use clinic::streams::store::table_key;
use clinic::streams::{Processor as _, sink_key};
use clinic::testkit::{self, Spawned};
use clinic_migrations::model::patient_id;
use clinic_migrations::processor::{Migrations, SINK_MIGRATIONS, SINK_PATIENTS, SINK_PERMS};

use crate::chain::statuses;

const BINARY: &str = env!("CARGO_BIN_EXE_clinic-migrations");
const CLINICS: usize = 6;
const PATIENTS: usize = 30;

fn insert(coll: &str, document: &Document) -> ChangeEvent {
    let id = document.get("_id").cloned().expect("_id");
    testkit::change(Operation::Insert, coll, id, Some(document.clone()))
}

/// The tables, the migrations, and what they must write.
struct World {
    tables: Vec<(&'static str, ChangeEvent)>,
    migrations: Vec<(&'static str, ChangeEvent)>,
    /// Sink keys of the patient documents to write.
    patients: BTreeSet<String>,
    /// Sink keys of the shares to tombstone.
    shares: BTreeSet<String>,
    /// Ids of the email requests.
    requests: BTreeSet<String>,
    /// Sink keys of the migrations.
    runs: BTreeSet<String>,
}

fn world() -> World {
    let created = DateTime::from_millis(1_790_000_000_000);
    let mut world = World {
        tables: Vec::new(),
        migrations: Vec::new(),
        patients: BTreeSet::new(),
        shares: BTreeSet::new(),
        requests: BTreeSet::new(),
        runs: BTreeSet::new(),
    };
    let profile = |user: &str| {
        let value = serde_json::json!({ "fullName": user, "email": format!("{user}@example.org") });
        doc! { "_id": ObjectId::new(), "userId": user, "value": value.to_string() }
    };
    let clinics: Vec<ObjectId> = (0..CLINICS).map(|_| ObjectId::new()).collect();
    for (i, clinic) in clinics.iter().enumerate() {
        let legacy = format!("legacy{i}");
        let migration = ObjectId::new();
        let request = |template: &str, user: &str| {
            format!(
                "migration:{}:{template}:{user}",
                table_key(&Bson::ObjectId(migration))
            )
        };
        world.tables.extend([
            (
                "clinic.clinics",
                insert(
                    "clinics",
                    &doc! { "_id": clinic, "name": format!("Clinic {i}") },
                ),
            ),
            ("seagull.seagull", insert("seagull", &profile(&legacy))),
            (
                "gatekeeper.perms",
                insert(
                    "perms",
                    &doc! { "_id": ObjectId::new(), "sharerId": &legacy, "userId": &legacy,
                    "permissions": { "root": {} } },
                ),
            ),
        ]);
        // Its patients, the first of them a patient of the clinic already, and one shared with
        // the next clinician too.
        let mut users: Vec<String> = (0..PATIENTS).map(|j| format!("p{i}.{j}")).collect();
        users.push(format!("x{i}"));
        users.push(format!("x{}", (i + CLINICS - 1) % CLINICS));
        for user in &users {
            let share = ObjectId::new();
            world.tables.push((
                "gatekeeper.perms",
                insert(
                    "perms",
                    &doc! { "_id": share, "sharerId": user, "userId": &legacy,
                    "permissions": { "view": {}, "upload": {} } },
                ),
            ));
            world.shares.insert(sink_key(&Bson::ObjectId(share)));
            world.requests.insert(request("migrate_patient", user));
            if *user == format!("p{i}.0") {
                world.tables.push((
                    "clinic.patients",
                    insert(
                        "patients",
                        &doc! { "_id": ObjectId::new(), "clinicId": clinic, "userId": user,
                        "permissions": { "view": {} } },
                    ),
                ));
            } else {
                let id = patient_id(&Bson::ObjectId(*clinic), user);
                world.patients.insert(sink_key(&Bson::ObjectId(id)));
            }
        }
        for user in users
            .iter()
            .filter(|u| !u.starts_with('x') || **u == format!("x{i}"))
        {
            world
                .tables
                .push(("seagull.seagull", insert("seagull", &profile(user))));
        }
        world
            .requests
            .insert(request("clinic_migration_complete", &legacy));
        world.runs.insert(sink_key(&Bson::ObjectId(migration)));
        world.migrations.push((
            "clinic.migrations",
            insert(
                "migrations",
                &doc! { "_id": migration, "clinicId": clinic, "userId": &legacy,
                "status": "PENDING", "createdTime": created },
            ),
        ));
    }
    world
}

fn start(endpoints: &Endpoints, prefix: &str, settings: &Path, log: PathBuf, id: &str) -> Spawned {
    let settings = settings.display().to_string();
    Spawned::start(
        Path::new(BINARY),
        endpoints,
        prefix,
        log,
        "info",
        &[
            ("CLINIC_SETTINGS", settings.as_str()),
            ("CLINIC__STREAMS__INSTANCE_ID", id),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_share_the_migrations_and_one_killed_and_one_added_repeat_nothing() {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let prefix = format!("{}.", testkit::unique("migrscale"));
    let topology = Migrations::new(Default::default(), Default::default()).topology();
    let names = testkit::topics_of(&topology);
    let topics: Vec<(&str, i32)> = names
        .iter()
        .map(|t| (t.as_str(), if t.ends_with(".dlq") { 1 } else { 3 }))
        .collect();
    testkit::create_topics(&endpoints, &prefix, &topics)
        .await
        .expect("topics");
    let world = world();
    testkit::publish_changes(&endpoints, &prefix, &world.tables)
        .await
        .expect("publish");

    // A killed instance's partitions move on once its session expires (the broker's minimum);
    // chunks of 4 shares, so each migration takes several steps.
    let dir = tempfile::tempdir().expect("a directory");
    let settings = dir.path().join("migrations.toml");
    std::fs::write(
        &settings,
        "[migration]\nchunk_size = 4\n[streams.librdkafka]\n\"session.timeout.ms\" = \"6000\"\n",
    )
    .expect("settings");
    let log = |id: &str| dir.path().join(format!("{id}.log"));
    let mut instances: BTreeMap<&str, Spawned> = ["one", "two", "three"]
        .into_iter()
        .map(|id| (id, start(&endpoints, &prefix, &settings, log(id), id)))
        .collect();
    testkit::await_spread(instances.values(), &format!("{prefix}clinic.patients")).await;
    let (first, second) = world.migrations.split_at(CLINICS / 2);
    testkit::publish_changes(&endpoints, &prefix, first)
        .await
        .expect("publish");
    let brokers = endpoints.kafka_brokers.clone();
    let patients = format!("{prefix}{SINK_PATIENTS}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while testkit::key_counts(&brokers, &patients, false).is_empty() {
        assert!(Instant::now() < deadline, "no patient within two minutes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The others trickle in; one instance is killed while they run (most likely inside a
    // transaction), and another joins.
    let trickle = {
        let (endpoints, prefix, second) = (endpoints.clone(), prefix.clone(), second.to_vec());
        tokio::spawn(async move {
            for migration in &second {
                testkit::publish_changes(&endpoints, &prefix, std::slice::from_ref(migration))
                    .await
                    .expect("publish");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    instances.remove("two").expect("two runs").kill();
    let completed = statuses(&brokers, &format!("{prefix}{SINK_MIGRATIONS}"))
        .values()
        .filter(|s| s.iter().any(|s| s == "COMPLETED"))
        .count();
    eprintln!("killed two with {completed} of {CLINICS} migrations completed");
    instances.insert(
        "four",
        start(&endpoints, &prefix, &settings, log("four"), "four"),
    );
    trickle.await.expect("the others published");

    let runs = format!("{prefix}{SINK_MIGRATIONS}");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let seen = statuses(&brokers, &runs);
        let completed = seen
            .values()
            .filter(|s| s.iter().any(|s| s == "COMPLETED"))
            .count();
        if completed == CLINICS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{completed} of {CLINICS} migrations completed: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Everything read and acted on (a repeat would be committed by now), then the instances
    // stop cleanly.
    let (waited, scope) = (brokers.clone(), prefix.clone());
    tokio::task::spawn_blocking(move || {
        testkit::await_processed(&waited, &scope, &topology, Duration::from_secs(120));
    })
    .await
    .expect("the inputs read");
    testkit::stop_all(instances);

    let once = |set: &BTreeSet<String>| -> BTreeMap<String, usize> {
        set.iter().map(|k| (k.clone(), 1)).collect()
    };
    let both: Vec<String> = ["RUNNING", "COMPLETED"].map(str::to_owned).into();
    assert_eq!(
        statuses(&brokers, &runs),
        world
            .runs
            .iter()
            .map(|k| (k.clone(), both.clone()))
            .collect()
    );
    assert_eq!(
        testkit::key_counts(&brokers, &patients, false),
        once(&world.patients)
    );
    assert_eq!(
        testkit::key_counts(&brokers, &format!("{prefix}{SINK_PERMS}"), true),
        once(&world.shares)
    );
    assert_eq!(
        testkit::key_counts(
            &brokers,
            &format!("{prefix}{}", clinic::email::REQUESTS_TOPIC),
            false
        ),
        once(&world.requests)
    );
    assert!(
        testkit::read_topic(&brokers, &format!("{prefix}migrations.dlq")).is_empty(),
        "nothing dead-lettered"
    );
}
