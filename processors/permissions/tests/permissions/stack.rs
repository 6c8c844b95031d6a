//! On the local stack: change events in the source connector's Avro form flow through the
//! processor (the real runner) and the repository's two gatekeeper sink connectors into FerretDB,
//! and the gatekeeper collections end up exactly as expected.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{Document, doc};
use clinic::cdc::extjson::Dialect;
use clinic::cdc::{self, ChangeEvent, Namespace, Operation, SourcePosition};
use clinic::endpoints::Endpoints;
use clinic::ops::connectors::{Connect, ConnectorAction, ConnectorsPlan, desired};
use clinic::ops::kafka;
use clinic::ops::topics::{Action, Desired, DesiredTopic, TopicsPlan, plan};
use clinic::streams::OutValue;
use clinic::streams::codec::AvroCodec;
use clinic::streams::runner::{self, Health, RunnerConfig};
use clinic_permissions::config::Inputs;
use clinic_permissions::processor::Permissions;
use futures::TryStreamExt as _;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn unique(what: &str) -> String {
    format!("perm-{what}-{}", uuid::Uuid::new_v4().simple())
}

fn change(
    operation: Operation,
    coll: &str,
    id: ObjectId,
    full: Option<Document>,
    removed: &[&str],
) -> ChangeEvent {
    ChangeEvent {
        operation,
        namespace: Some(Namespace {
            db: "clinic".into(),
            coll: Some(coll.into()),
        }),
        document_key: doc! { "_id": id },
        full_document: full,
        updated_fields: doc! {},
        removed_fields: removed.iter().map(|s| (*s).to_owned()).collect(),
        source: SourcePosition {
            resume_token: Some(doc! { "_data": id.to_hex() }),
            ..SourcePosition::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn avro_change_events_reach_the_gatekeeper_collections_through_the_sink_connectors() {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let prefix = format!("{}.", unique("run"));
    let database = unique("gatekeeper").replace('-', "_");
    let names = [
        "clinic.patients",
        "clinic.clinicians",
        "sink.gatekeeper.patient_permissions",
        "sink.gatekeeper.clinician_permissions",
        "permissions.dlq",
        "permissions.patients.changelog",
        "permissions.clinicians.changelog",
    ];
    let mut topics: BTreeMap<String, DesiredTopic> = names
        .iter()
        .map(|n| {
            let name = format!("{prefix}{n}");
            (
                name.clone(),
                DesiredTopic {
                    name,
                    partitions: 2,
                    replication_factor: 1,
                    configs: BTreeMap::new(),
                },
            )
        })
        .collect();
    topics.insert(
        "connect.sink.dlq".into(),
        DesiredTopic {
            name: "connect.sink.dlq".into(),
            partitions: 1,
            replication_factor: 1,
            configs: BTreeMap::new(),
        },
    );
    let observed = kafka::observe(&endpoints.kafka_brokers)
        .await
        .unwrap_or_else(|e| {
            panic!("Kafka is not reachable ({e}): start the local stack with `scripts/stack up`")
        });
    let creates = plan(
        &Desired {
            prefix: String::new(),
            topics,
        },
        &observed,
        false,
    )
    .expect("plan")
    .actions;
    let creates = TopicsPlan {
        actions: creates
            .into_iter()
            .filter(|a| matches!(a, Action::Create(_)))
            .collect(),
    };
    kafka::apply(&endpoints.kafka_brokers, &creates, |_| {})
        .await
        .expect("topics");

    // The repository's two gatekeeper sinks, pointed at the prefixed topics and a fresh database.
    let root = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR")
            .expect("run through cargo, which sets CARGO_MANIFEST_DIR"),
    )
    .join("../../connectors");
    let connect = Connect::new(&endpoints.connect_url);
    let mut deployed = Vec::new();
    for connector in desired(&root).expect("connector files") {
        let Some(topic) = connector
            .config
            .get("topics")
            .filter(|t| t.starts_with("sink.gatekeeper.") && t.ends_with("_permissions"))
            .cloned()
        else {
            continue;
        };
        let mut config = connector.config.clone();
        config.insert("topics".into(), format!("{prefix}{topic}"));
        config.insert("database".into(), database.clone());
        let name = unique("sink");
        let create = ConnectorsPlan {
            actions: vec![ConnectorAction::Create {
                name: name.clone(),
                config,
            }],
        };
        connect.apply(&create, |_| {}).await.expect("connector");
        deployed.push(name);
    }
    assert_eq!(deployed.len(), 2);

    let clinic = ObjectId::new();
    let (p1, p2, p3, c1, c2) = (
        ObjectId::new(),
        ObjectId::new(),
        ObjectId::new(),
        ObjectId::new(),
        ObjectId::new(),
    );
    let patient = |id: ObjectId, user: &str, permissions: Document| {
        doc! { "_id": id, "clinicId": clinic, "userId": user, "fullName": "P", "permissions": permissions }
    };
    let events = [
        (
            "clinic.patients",
            change(
                Operation::Insert,
                "patients",
                p1,
                Some(patient(p1, "u1", doc! { "view": {}, "upload": {} })),
                &[],
            ),
        ),
        (
            "clinic.patients",
            change(
                Operation::Insert,
                "patients",
                p2,
                Some(patient(p2, "u2", doc! { "view": {} })),
                &[],
            ),
        ),
        (
            "clinic.patients",
            change(
                Operation::Update,
                "patients",
                p2,
                None,
                &["permissions.view"],
            ),
        ),
        (
            "clinic.patients",
            change(
                Operation::Insert,
                "patients",
                p3,
                Some(patient(p3, "u3", doc! { "custodian": {} })),
                &[],
            ),
        ),
        (
            "clinic.clinicians",
            change(
                Operation::Insert,
                "clinicians",
                c1,
                Some(
                    doc! { "_id": c1, "clinicId": clinic, "userId": "d1", "roles": ["CLINIC_ADMIN"] },
                ),
                &[],
            ),
        ),
        (
            "clinic.clinicians",
            change(
                Operation::Insert,
                "clinicians",
                c2,
                Some(
                    doc! { "_id": c2, "clinicId": clinic, "inviteId": "i2", "roles": ["CLINIC_MEMBER"] },
                ),
                &[],
            ),
        ),
    ];
    let codec = AvroCodec::new(&endpoints.schema_registry_url());
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &endpoints.kafka_brokers)
        .create()
        .expect("producer");
    for (topic, event) in &events {
        let topic = format!("{prefix}{topic}");
        let value = OutValue::Avro {
            schema: Arc::from(cdc::mongo::MONGO_CHANGE_STREAM_SCHEMA),
            value: cdc::mongo::to_avro(event, Dialect::Legacy),
        };
        let bytes = codec.encode(&topic, &value).await.expect("encode");
        let key = cdc::mongo::key_json(event, Dialect::Legacy).to_string();
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&bytes),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }

    let shutdown = Arc::new(AtomicBool::new(false));
    let config = RunnerConfig {
        brokers: endpoints.kafka_brokers.clone(),
        schema_registry_url: endpoints.schema_registry_url(),
        topic_prefix: prefix.clone(),
        admin_addr: None,
        ..RunnerConfig::default()
    };
    let running = tokio::spawn(runner::run_until(
        config,
        || Permissions::new(Inputs::default()),
        Arc::clone(&shutdown),
        Arc::new(Health::default()),
    ));

    let db = mongodb::Client::with_uri_str(&endpoints.mongo_uri)
        .await
        .expect("mongo")
        .database(&database);
    let expected_patients = vec![
        doc! { "_id": p1, "userId": "u1", "clinicId": clinic.to_hex(), "permissions": { "upload": {}, "view": {} } },
        doc! { "_id": p3, "userId": "u3", "clinicId": clinic.to_hex(), "permissions": { "custodian": {} } },
    ];
    let expected_clinicians = vec![
        doc! { "_id": c1, "userId": "d1", "clinicId": clinic.to_hex(), "roles": ["CLINIC_ADMIN"] },
    ];
    let all = |name: &str| {
        let collection = db.collection::<Document>(name);
        async move {
            let mut docs: Vec<Document> = collection
                .find(doc! {})
                .await
                .expect("find")
                .try_collect()
                .await
                .expect("read");
            docs.sort_by_key(|d| {
                d.get_object_id("_id")
                    .map(|o| o.to_hex())
                    .unwrap_or_default()
            });
            docs
        }
    };
    let mut sorted_expected = expected_patients.clone();
    sorted_expected.sort_by_key(|d| {
        d.get_object_id("_id")
            .map(|o| o.to_hex())
            .unwrap_or_default()
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let (patients, clinicians) = loop {
        let (patients, clinicians) = (
            all("patient_permissions").await,
            all("clinician_permissions").await,
        );
        if (patients == sorted_expected && clinicians == expected_clinicians)
            || Instant::now() > deadline
        {
            break (patients, clinicians);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    shutdown.store(true, Ordering::SeqCst);
    running
        .await
        .expect("joined")
        .expect("the runner stops cleanly");
    for name in deployed {
        connect.delete(&name).await.expect("delete connector");
    }

    assert_eq!(
        patients, sorted_expected,
        "p2 lost its last permission: its document must be gone"
    );
    assert_eq!(
        clinicians, expected_clinicians,
        "the invite without a user grants nothing"
    );
}
