//! Avro through the registry's Confluent-compatible API, over a real Kafka topic.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use schema_registry_converter::async_impl::avro::AvroEncoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use super::{ROUND_TRIP_TIMEOUT, SMOKE_RECORD_SCHEMA, SmokeRecord, clean_up_topic, create_topic};
use crate::endpoints::Endpoints;

/// What the Avro round trip sent and got back.
#[derive(Debug)]
pub struct AvroRoundTrip {
    /// Topic used (deleted afterwards).
    pub topic: String,
    /// Schema id framed into the record.
    pub schema_id: u32,
    /// The id the registry reports for the latest version of `<topic>-value`.
    pub registered_id: u32,
    /// The five framing bytes: magic byte 0 and the big-endian schema id.
    pub frame: [u8; 5],
    /// What was produced.
    pub sent: SmokeRecord,
    /// What was consumed and decoded.
    pub received: SmokeRecord,
    /// Produce-to-decode time.
    pub elapsed: Duration,
}

/// Registers [`SMOKE_RECORD_SCHEMA`] under `<topic>-value`, produces one record framed with its
/// id, consumes it from the beginning of the topic and decodes it through the registry.
pub async fn round_trip(endpoints: &Endpoints) -> anyhow::Result<AvroRoundTrip> {
    let topic = super::unique("avro");
    create_topic(&endpoints.kafka_brokers, &topic).await?;
    let result = produce_and_consume(endpoints, &topic).await;
    clean_up_topic(endpoints, &topic).await;
    result
}

/// Encodes `record` as a Confluent-framed value of `topic`, registering the schema under the topic
/// name strategy if it is not there yet.
pub async fn encode(
    endpoints: &Endpoints,
    topic: &str,
    record: &SmokeRecord,
) -> anyhow::Result<Vec<u8>> {
    let encoder = AvroEncoder::new(SrSettings::new(endpoints.schema_registry_url()));
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        topic.to_owned(),
        false,
        SuppliedSchema::new(None, SchemaType::Avro, SMOKE_RECORD_SCHEMA.to_owned()),
    );
    encoder
        .encode_struct(record, &strategy)
        .await
        .with_context(|| {
            format!(
                "encoding through the registry at {}",
                endpoints.registry_url
            )
        })
}

/// Produces one record and waits for the broker's acknowledgement.
pub async fn produce(
    endpoints: &Endpoints,
    topic: &str,
    key: &str,
    value: &[u8],
) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &endpoints.kafka_brokers)
        .set("enable.idempotence", "true")
        .create()
        .context("creating a Kafka producer")?;
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(error, _)| error)
        .with_context(|| format!("producing to {topic}"))?;
    Ok(())
}

async fn produce_and_consume(endpoints: &Endpoints, topic: &str) -> anyhow::Result<AvroRoundTrip> {
    let sent = SmokeRecord::sample();
    let started = Instant::now();
    let bytes = encode(endpoints, topic, &sent).await?;
    anyhow::ensure!(
        bytes.len() > 5 && bytes[0] == 0,
        "the encoder did not frame the record"
    );
    let frame: [u8; 5] = bytes[..5].try_into().expect("BUG: length checked above");
    let schema_id = u32::from_be_bytes(bytes[1..5].try_into().expect("BUG: length checked above"));
    produce(endpoints, topic, &sent.id, &bytes).await?;

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &endpoints.kafka_brokers)
        .set("group.id", super::unique("group"))
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a Kafka consumer")?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let message = tokio::time::timeout(ROUND_TRIP_TIMEOUT, consumer.recv())
        .await
        .with_context(|| format!("no record arrived on {topic} within {ROUND_TRIP_TIMEOUT:?}"))?
        .with_context(|| format!("consuming from {topic}"))?;

    let decoded = crate::streams::codec::AvroCodec::new(&endpoints.schema_registry_url())
        .decode(message.payload())
        .await
        .context("decoding the consumed record through the registry")?
        .context("the consumed record has no value")?;
    let received: SmokeRecord = apache_avro::from_value(&decoded)
        .context("the decoded value does not have the smoke record's shape")?;
    let registered_id = latest_schema_id(endpoints, &format!("{topic}-value")).await?;
    Ok(AvroRoundTrip {
        topic: topic.to_owned(),
        schema_id,
        registered_id,
        frame,
        sent,
        received,
        elapsed: started.elapsed(),
    })
}

/// The id of the latest schema registered under `subject`, from the ccompat API.
async fn latest_schema_id(endpoints: &Endpoints, subject: &str) -> anyhow::Result<u32> {
    #[derive(serde::Deserialize)]
    struct Latest {
        id: u32,
    }
    let url = format!(
        "{}/subjects/{subject}/versions/latest",
        endpoints.schema_registry_url()
    );
    let latest: Latest = reqwest::get(&url)
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url}"))?
        .json()
        .await
        .with_context(|| format!("reading {url}"))?;
    Ok(latest.id)
}
