//! `clinic connectors` against the real Connect worker: plan → apply → plan is empty, the applied
//! sink connector runs and writes to MongoDB, drift is planned and repaired, a broken config is
//! reported field by field.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use clinic::ops::connectors::{Connect, ConnectorAction, ConnectorsPlan, Prune, desired};
use clinic::ops::kafka;
use clinic::ops::topics::{Action, DesiredTopic, TopicsPlan};
use clinic::smoke::{SmokeRecord, avro, unique};
use mongodb::bson::doc;
use serde_json::json;

use crate::helpers;

/// A connectors directory with one MongoDB sink connector for a fresh topic and collection; the
/// database address and registry come through `${env:…}` as in `connectors/`.
fn directory(topic: &str, collection: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(unique("connectors"));
    std::fs::create_dir_all(&dir).expect("dir");
    let name = unique("sink");
    let config = json!({
        "connector.class": "com.mongodb.kafka.connect.MongoSinkConnector",
        "tasks.max": "1",
        "topics": topic,
        "connection.uri": "${env:CLINIC_MONGO_URI}",
        "database": "clinic_connectors_test",
        "collection": collection,
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "io.apicurio.registry.utils.converter.AvroConverter",
        "value.converter.apicurio.registry.url": "${env:CLINIC_APICURIO_URL}",
        "value.converter.apicurio.registry.as-confluent": "true",
        "value.converter.apicurio.registry.use-id": "contentId",
        "value.converter.apicurio.registry.headers.enabled": "false",
        "document.id.strategy": "com.mongodb.kafka.connect.sink.processor.id.strategy.ProvidedInValueStrategy",
    });
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(&config).expect("json"),
    )
    .expect("file");
    (dir, name)
}

async fn plan(connect: &Connect, dir: &Path) -> ConnectorsPlan {
    connect
        .plan(&desired(dir).expect("files"), Prune::Nothing)
        .await
        .expect("plan")
}

#[tokio::test]
async fn applied_sink_connector_runs_and_writes_and_a_second_plan_is_empty() {
    let endpoints = helpers::stack(&["kafka", "registry", "connect", "mongodb"]).await;
    let connect = Connect::new(&endpoints.connect_url);
    let topic = unique("connectors-topic");
    let collection = unique("collection");
    let (dir, name) = directory(&topic, &collection);

    let create = TopicsPlan {
        actions: vec![Action::Create(DesiredTopic {
            name: topic.clone(),
            partitions: 1,
            replication_factor: 1,
            configs: BTreeMap::new(),
        })],
    };
    kafka::apply(&endpoints.kafka_brokers, &create, |_| {})
        .await
        .expect("topic");

    let first = plan(&connect, &dir).await;
    connect.apply(&first, |_| {}).await.expect("apply");
    let second = plan(&connect, &dir).await;
    let record = SmokeRecord::sample();
    let bytes = avro::encode(&endpoints, &topic, &record)
        .await
        .expect("encode");
    avro::produce(&endpoints, &topic, &record.id, &bytes)
        .await
        .expect("produce");
    let documents = mongodb::Client::with_uri_str(&endpoints.mongo_uri)
        .await
        .expect("mongo")
        .database("clinic_connectors_test")
        .collection::<SmokeRecord>(&collection);
    let deadline = Instant::now() + Duration::from_secs(90);
    let written = loop {
        if let Some(found) = documents
            .find_one(doc! { "_id": &record.id })
            .await
            .expect("find")
        {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the connector wrote nothing: {:?}",
            connect.status(&name).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let status = connect
        .status(&name)
        .await
        .expect("status")
        .expect("deployed");
    connect.delete(&name).await.expect("delete");

    assert!(matches!(
        first.actions.as_slice(),
        [ConnectorAction::Create { .. }]
    ));
    assert_eq!(second, ConnectorsPlan::default());
    assert_eq!(written, record);
    assert_eq!(status.connector.state, "RUNNING");
    assert!(
        status.tasks.iter().all(|t| t.state == "RUNNING"),
        "{status:?}"
    );
}

#[tokio::test]
async fn config_drift_is_planned_key_by_key_and_repaired() {
    let endpoints = helpers::stack(&["connect"]).await;
    let connect = Connect::new(&endpoints.connect_url);
    let (dir, name) = directory(&unique("connectors-topic"), &unique("collection"));
    connect
        .apply(&plan(&connect, &dir).await, |_| {})
        .await
        .expect("apply");
    // Someone edits the connector by hand.
    let mut by_hand = desired(&dir).expect("files")[0].config.clone();
    by_hand.insert("tasks.max".into(), "2".into());
    by_hand.insert("errors.tolerance".into(), "all".into());
    reqwest::Client::new()
        .put(format!(
            "{}/connectors/{name}/config",
            endpoints.connect_url
        ))
        .json(&by_hand)
        .send()
        .await
        .expect("put")
        .error_for_status()
        .expect("accepted");

    let drift = plan(&connect, &dir).await;
    connect.apply(&drift, |_| {}).await.expect("repair");
    let after = plan(&connect, &dir).await;
    connect.delete(&name).await.expect("delete");

    let [ConnectorAction::Update { changes, .. }] = drift.actions.as_slice() else {
        panic!("{drift:?}")
    };
    assert_eq!(
        changes,
        &[
            ("errors.tolerance".to_owned(), Some("all".to_owned()), None),
            (
                "tasks.max".to_owned(),
                Some("2".to_owned()),
                Some("1".to_owned())
            ),
        ]
    );
    assert_eq!(after, ConnectorsPlan::default());
}

#[tokio::test]
async fn validate_reports_a_broken_config_field_by_field() {
    let endpoints = helpers::stack(&["connect"]).await;
    let connect = Connect::new(&endpoints.connect_url);
    let dir = std::env::temp_dir().join(unique("connectors"));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("broken.json"),
        r#"{"connector.class": "com.mongodb.kafka.connect.MongoSinkConnector", "topics": "t", "connection.uri": "not-a-uri"}"#,
    )
    .expect("file");

    let errors = connect
        .validate(&desired(&dir).expect("files")[0])
        .await
        .expect("validate");

    let fields: Vec<&str> = errors.iter().map(|f| f.field.as_str()).collect();
    assert!(
        fields.contains(&"connection.uri") && fields.contains(&"database"),
        "{errors:?}"
    );
    let uri = errors
        .iter()
        .find(|f| f.field == "connection.uri")
        .expect("uri errors");
    assert!(uri.errors[0].contains("mongodb://"), "{uri:?}");
}
