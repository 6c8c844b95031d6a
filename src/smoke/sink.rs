//! Kafka Connect's MongoDB sink connector, reading Confluent-framed Avro through Apicurio's
//! converter, writing into MongoDB (FerretDB locally).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use mongodb::bson::doc;
use serde_json::{Value, json};

use super::{ROUND_TRIP_TIMEOUT, SmokeRecord, avro, clean_up_topic, create_topic};
use crate::endpoints::Endpoints;

/// The database the sink check writes into.
pub const SMOKE_DATABASE: &str = "clinic_smoke";

/// What the sink round trip sent and read back from MongoDB.
#[derive(Debug)]
pub struct SinkRoundTrip {
    /// Connector registered (deleted afterwards).
    pub connector: String,
    /// Topic it read (deleted afterwards).
    pub topic: String,
    /// `database.collection` it wrote (dropped afterwards).
    pub namespace: String,
    /// What was produced.
    pub sent: SmokeRecord,
    /// The document read back with the `mongodb` driver.
    pub received: SmokeRecord,
    /// Produce-to-document time, connector start-up included.
    pub elapsed: Duration,
}

/// The settings that let Apicurio's converter read records framed the Confluent way (magic byte
/// and a 4-byte id, no headers) by producers that registered through the ccompat API. That API
/// hands out *content* ids, so the converter must look ids up as content ids; see
/// `docs/local-stack.md` for how this was established.
pub fn apicurio_avro_converter(endpoints: &Endpoints) -> Value {
    json!({
        "value.converter": "io.apicurio.registry.utils.converter.AvroConverter",
        "value.converter.apicurio.registry.url": endpoints.apicurio_v2_url(),
        "value.converter.apicurio.registry.as-confluent": "true",
        "value.converter.apicurio.registry.use-id": "contentId",
        "value.converter.apicurio.registry.headers.enabled": "false",
    })
}

/// Registers a MongoDB sink connector for a fresh topic and collection, produces one Avro record
/// and waits until the document appears in MongoDB.
pub async fn round_trip(endpoints: &Endpoints) -> anyhow::Result<SinkRoundTrip> {
    let topic = super::unique("sink");
    let connector = super::unique("connector");
    let collection = super::unique("collection");
    create_topic(&endpoints.kafka_brokers, &topic).await?;
    let http = reqwest::Client::new();
    let result = run(endpoints, &http, &topic, &connector, &collection).await;
    if let Err(error) = delete_connector(endpoints, &http, &connector).await {
        tracing::warn!(connector, error = %error, "Could not delete the smoke connector.");
    }
    clean_up_topic(endpoints, &topic).await;
    if let Ok(client) = mongodb::Client::with_uri_str(&endpoints.mongo_uri).await {
        let dropped = client
            .database(SMOKE_DATABASE)
            .collection::<SmokeRecord>(&collection)
            .drop()
            .await;
        if let Err(error) = dropped {
            tracing::warn!(collection, error = %error, "Could not drop the smoke collection.");
        }
    }
    result
}

async fn run(
    endpoints: &Endpoints,
    http: &reqwest::Client,
    topic: &str,
    connector: &str,
    collection: &str,
) -> anyhow::Result<SinkRoundTrip> {
    let mut config = json!({
        "connector.class": "com.mongodb.kafka.connect.MongoSinkConnector",
        "tasks.max": "1",
        "topics": topic,
        "connection.uri": endpoints.mongo_uri,
        "database": SMOKE_DATABASE,
        "collection": collection,
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "document.id.strategy": "com.mongodb.kafka.connect.sink.processor.id.strategy.ProvidedInValueStrategy",
        "errors.tolerance": "none",
    });
    merge(&mut config, apicurio_avro_converter(endpoints));
    let url = format!("{}/connectors/{connector}/config", endpoints.connect_url);
    let response = http
        .put(&url)
        .json(&config)
        .send()
        .await
        .with_context(|| format!("registering connector {connector} at {url}"))?;
    let status = response.status();
    anyhow::ensure!(
        status.is_success(),
        "Connect refused connector {connector}: {status} {}",
        response.text().await.unwrap_or_default()
    );

    let sent = SmokeRecord::sample();
    let started = Instant::now();
    let bytes = avro::encode(endpoints, topic, &sent).await?;
    avro::produce(endpoints, topic, &sent.id, &bytes).await?;

    let client = mongodb::Client::with_uri_str(&endpoints.mongo_uri)
        .await
        .with_context(|| format!("connecting to MongoDB at {}", endpoints.mongo_uri))?;
    let documents = client
        .database(SMOKE_DATABASE)
        .collection::<SmokeRecord>(collection);
    let deadline = Instant::now() + ROUND_TRIP_TIMEOUT;
    loop {
        let found = documents
            .find_one(doc! { "_id": &sent.id })
            .await
            .with_context(|| format!("reading {SMOKE_DATABASE}.{collection}"))?;
        if let Some(received) = found {
            return Ok(SinkRoundTrip {
                connector: connector.to_owned(),
                topic: topic.to_owned(),
                namespace: format!("{SMOKE_DATABASE}.{collection}"),
                sent,
                received,
                elapsed: started.elapsed(),
            });
        }
        if Instant::now() >= deadline {
            let status = connector_status(endpoints, http, connector).await;
            anyhow::bail!(
                "the document did not reach {SMOKE_DATABASE}.{collection} within \
                 {ROUND_TRIP_TIMEOUT:?}; connector status: {status}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

/// The connector's status document as text, for error messages (it carries a failed task's trace).
async fn connector_status(
    endpoints: &Endpoints,
    http: &reqwest::Client,
    connector: &str,
) -> String {
    let url = format!("{}/connectors/{connector}/status", endpoints.connect_url);
    match http.get(&url).send().await {
        Ok(response) => response.text().await.unwrap_or_else(|e| e.to_string()),
        Err(error) => format!("unavailable ({error})"),
    }
}

async fn delete_connector(
    endpoints: &Endpoints,
    http: &reqwest::Client,
    connector: &str,
) -> anyhow::Result<()> {
    let url = format!("{}/connectors/{connector}", endpoints.connect_url);
    let response = http.delete(&url).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "DELETE {url}: {}",
        response.status()
    );
    Ok(())
}
