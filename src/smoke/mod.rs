//! End-to-end checks of the chain every processor relies on, against real services:
//!
//! - [`avro`]: a record encoded with `schema_registry_converter` through the registry's
//!   Confluent-compatible API, produced to Kafka, consumed and decoded back;
//! - [`sink`]: the same kind of record written into MongoDB by a MongoDB sink connector that
//!   Kafka Connect runs with Apicurio's converter (Confluent framing);
//! - [`mail`]: an email sent over SMTP with `lettre` and read back from Mailpit's API.
//!
//! Each check uses fresh topic, subject, connector and collection names, returns what it sent and
//! what it read back, and removes what it created. The `clinic smoke` command prints the results;
//! the integration tests in `tests/smoke` assert on them.

pub mod avro;
pub mod mail;
pub mod report;
pub mod sink;

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde::{Deserialize, Serialize};

/// The record the checks send: a string id, a long, an array and an optional field, so the
/// round trips exercise the Avro types the sink topics use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmokeRecord {
    /// Document id; the sink connector takes it from the value.
    #[serde(rename = "_id")]
    pub id: String,
    /// A name.
    pub name: String,
    /// A counter (Avro `long`, MongoDB `Int64`).
    pub count: i64,
    /// Tags (Avro array of strings).
    pub tags: Vec<String>,
    /// An optional note (Avro union with null).
    pub note: Option<String>,
}

/// The Avro schema of [`SmokeRecord`].
pub const SMOKE_RECORD_SCHEMA: &str = r#"{
  "type": "record",
  "name": "SmokeRecord",
  "namespace": "clinic.smoke",
  "fields": [
    {"name": "_id", "type": "string"},
    {"name": "name", "type": "string"},
    {"name": "count", "type": "long"},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "note", "type": ["null", "string"], "default": null}
  ]
}"#;

impl SmokeRecord {
    /// A record with a fresh id.
    pub fn sample() -> Self {
        Self {
            id: unique("record"),
            name: "Smoke Clinic".to_owned(),
            count: 1_234_567_890_123,
            tags: vec!["alpha".to_owned(), "beta".to_owned()],
            note: Some("sent by clinic smoke".to_owned()),
        }
    }
}

/// A name no earlier run used: `clinic-smoke-<what>-<uuid>`.
pub fn unique(what: &str) -> String {
    format!("clinic-smoke-{what}-{}", uuid::Uuid::new_v4().simple())
}

/// How long a check waits for its record or message to come back.
pub const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(90);

fn admin(brokers: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("creating a Kafka admin client")
}

/// Creates a one-partition topic and waits until the broker reports it.
async fn create_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let results = admin(brokers)?
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .with_context(|| format!("creating topic {topic} on {brokers}"))?;
    for result in results {
        result.map_err(|(name, code)| anyhow::anyhow!("creating topic {name}: {code}"))?;
    }
    Ok(())
}

/// Removes what a check created on Kafka and in the registry: the topic and its value subject.
/// Failures are logged, not returned, since this is clean-up.
async fn clean_up_topic(endpoints: &crate::endpoints::Endpoints, topic: &str) {
    delete_topic(&endpoints.kafka_brokers, topic).await;
    let subject = format!("{}/subjects/{topic}-value", endpoints.schema_registry_url());
    let http = reqwest::Client::new();
    // The registry only hard-deletes (`permanent=true`) what was soft-deleted first.
    for url in [subject.clone(), format!("{subject}?permanent=true")] {
        if let Err(error) = http
            .delete(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
        {
            tracing::warn!(topic, error = %error, "Could not delete the smoke subject.");
        }
    }
}

async fn delete_topic(brokers: &str, topic: &str) {
    let outcome = match admin(brokers) {
        Ok(admin) => admin
            .delete_topics(&[topic], &AdminOptions::new())
            .await
            .map(|_| ())
            .map_err(anyhow::Error::from),
        Err(error) => Err(error),
    };
    if let Err(error) = outcome {
        tracing::warn!(topic, error = %error, "Could not delete the smoke topic.");
    }
}
