//! The sink connector design, end to end on the real chain: a record keyed `{"_id": <ObjectId>}`
//! with a `PatientPermissions` Avro value (the repository's schema) is written by the repository's
//! `mongo-sink-gatekeeper-patient-permissions` connector (pointed at a fresh topic and collection)
//! as `{_id: ObjectId, userId, clinicId, permissions: {view: {}, upload: {}}}`, and a tombstone
//! with the same key deletes the document.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::types::Value as Avro;
use clinic::ops::connectors::{Connect, ConnectorAction, ConnectorsPlan, desired};
use clinic::ops::kafka;
use clinic::ops::topics::{Action, Desired, DesiredTopic, TopicsPlan, plan};
use clinic::smoke::unique;
use clinic::streams::OutValue;
use clinic::streams::codec::AvroCodec;
use mongodb::bson::{Document, doc, oid::ObjectId};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::helpers;

async fn produce(brokers: &str, topic: &str, key: &str, value: Option<&[u8]>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    let mut record = FutureRecord::<str, [u8]>::to(topic).key(key);
    if let Some(value) = value {
        record = record.payload(value);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("produced");
}

#[tokio::test]
async fn patient_permissions_land_as_gatekeeper_reads_them_and_tombstones_delete() {
    let endpoints = helpers::stack(&["kafka", "registry", "connect", "mongodb"]).await;
    let root = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR")
            .expect("run through cargo, which sets CARGO_MANIFEST_DIR"),
    );
    let topic = unique("patient-permissions");
    let collection = unique("patient_permissions");
    // The connector's own topic, and the DLQ every sink connector names (topics.yaml lists it;
    // Connect would otherwise try to create it with replication 3).
    let wanted = Desired {
        prefix: String::new(),
        topics: [topic.as_str(), "connect.sink.dlq"]
            .map(|name| {
                let spec = DesiredTopic {
                    name: name.to_owned(),
                    partitions: 1,
                    replication_factor: 1,
                    configs: BTreeMap::new(),
                };
                (name.to_owned(), spec)
            })
            .into(),
    };
    let observed = kafka::observe(&endpoints.kafka_brokers)
        .await
        .expect("observe");
    let missing = TopicsPlan {
        actions: plan(&wanted, &observed, false)
            .expect("plan")
            .actions
            .into_iter()
            .filter(|a| matches!(a, Action::Create(_)))
            .collect(),
    };
    kafka::apply(&endpoints.kafka_brokers, &missing, |_| {})
        .await
        .expect("topics");
    let mut connector = desired(&root.join("connectors"))
        .expect("connector files")
        .into_iter()
        .find(|c| c.name == "mongo-sink-gatekeeper-patient-permissions")
        .expect("the repository's connector");
    connector.name = unique("sink");
    connector.config.insert("topics".into(), topic.clone());
    connector
        .config
        .insert("database".into(), "clinic_sink_shapes".into());
    connector
        .config
        .insert("collection".into(), collection.clone());
    let connect = Connect::new(&endpoints.connect_url);
    connect
        .apply(
            &ConnectorsPlan {
                actions: vec![ConnectorAction::Create {
                    name: connector.name.clone(),
                    config: connector.config.clone(),
                }],
            },
            |_| {},
        )
        .await
        .expect("connector");

    let schema = std::fs::read_to_string(
        root.join("processors/permissions/schemas/patient_permissions.avsc"),
    )
    .expect("schema");
    let grant = || Avro::Record(vec![]);
    let value = OutValue::Avro {
        schema: Arc::from(schema),
        value: Avro::Record(vec![
            ("userId".into(), Avro::String("a1b2c3d4e5".into())),
            (
                "clinicId".into(),
                Avro::String("60a1b2c3d4e5f60718293a4b".into()),
            ),
            (
                "permissions".into(),
                Avro::Map([("view".to_owned(), grant()), ("upload".to_owned(), grant())].into()),
            ),
        ]),
    };
    let bytes = AvroCodec::new(&endpoints.schema_registry_url())
        .encode(&topic, &value)
        .await
        .expect("encode");
    let id = ObjectId::new();
    let key = format!(r#"{{"_id": {{"$oid": "{}"}}}}"#, id.to_hex());
    produce(&endpoints.kafka_brokers, &topic, &key, Some(&bytes)).await;

    let documents = mongodb::Client::with_uri_str(&endpoints.mongo_uri)
        .await
        .expect("mongo")
        .database("clinic_sink_shapes")
        .collection::<Document>(&collection);
    let deadline = Instant::now() + Duration::from_secs(90);
    let written = loop {
        if let Some(found) = documents.find_one(doc! { "_id": id }).await.expect("find") {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "nothing written: {:?}",
            connect.status(&connector.name).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    produce(&endpoints.kafka_brokers, &topic, &key, None).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    while documents
        .find_one(doc! { "_id": id })
        .await
        .expect("find")
        .is_some()
    {
        assert!(
            Instant::now() < deadline,
            "the tombstone did not delete: {:?}",
            connect.status(&connector.name).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    connect
        .delete(&connector.name)
        .await
        .expect("delete connector");

    assert_eq!(
        written,
        doc! {
            "_id": id,
            "userId": "a1b2c3d4e5",
            "clinicId": "60a1b2c3d4e5f60718293a4b",
            "permissions": { "upload": {}, "view": {} },
        }
    );
}
