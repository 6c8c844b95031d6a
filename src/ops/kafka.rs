//! Reading topics from a cluster and applying a [`TopicsPlan`] to it, through the admin API.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::PlanError;
use super::topics::{Action, ObservedTopic, TopicsPlan, is_internal};

const TIMEOUT: Duration = Duration::from_secs(30);

fn kafka_error(what: &str) -> impl Fn(rdkafka::error::KafkaError) -> PlanError + '_ {
    move |e| PlanError::Kafka(format!("{what}: {e}"))
}

/// Every non-internal topic on the cluster, with partitions, replication and configs.
///
/// # Errors
/// The cluster cannot be reached or described.
pub async fn observe(brokers: &str) -> Result<Vec<ObservedTopic>, PlanError> {
    let consumer: BaseConsumer = crate::endpoints::kafka_client(brokers)
        .create()
        .map_err(kafka_error("creating a client"))?;
    let metadata = consumer
        .fetch_metadata(None, TIMEOUT)
        .map_err(kafka_error("fetching metadata"))?;
    let mut topics: Vec<ObservedTopic> = metadata
        .topics()
        .iter()
        .filter(|t| !is_internal(t.name()) && t.error().is_none())
        .map(|t| ObservedTopic {
            name: t.name().to_owned(),
            partitions: i32::try_from(t.partitions().len()).unwrap_or(i32::MAX),
            replication_factor: t
                .partitions()
                .iter()
                .find(|p| p.id() == 0)
                .map_or(0, |p| i32::try_from(p.replicas().len()).unwrap_or(i32::MAX)),
            configs: BTreeMap::new(),
            dynamic: BTreeMap::new(),
        })
        .collect();
    if topics.is_empty() {
        return Ok(topics);
    }
    let admin = admin(brokers)?;
    let specifiers: Vec<ResourceSpecifier<'_>> = topics
        .iter()
        .map(|t| ResourceSpecifier::Topic(&t.name))
        .collect();
    let described = admin
        .describe_configs(
            &specifiers,
            &AdminOptions::new().request_timeout(Some(TIMEOUT)),
        )
        .await
        .map_err(kafka_error("describing topic configs"))?;
    for (topic, result) in topics.iter_mut().zip(described) {
        let resource =
            result.map_err(|e| PlanError::Kafka(format!("describing {}: {e}", topic.name)))?;
        for entry in resource.entries {
            let Some(value) = entry.value else { continue };
            if entry.source == ConfigSource::DynamicTopic {
                topic.dynamic.insert(entry.name.clone(), value.clone());
            }
            topic.configs.insert(entry.name, value);
        }
    }
    Ok(topics)
}

fn admin(brokers: &str) -> Result<AdminClient<DefaultClientContext>, PlanError> {
    crate::endpoints::kafka_client(brokers)
        .create()
        .map_err(kafka_error("creating an admin client"))
}

/// Applies every action that can be applied, calling `progress` before each. Actions that cannot
/// change in place are skipped (the plan shows them).
///
/// # Errors
/// The first action the cluster refuses; the ones before it stay applied.
pub async fn apply(
    brokers: &str,
    plan: &TopicsPlan,
    mut progress: impl FnMut(&Action),
) -> Result<(), PlanError> {
    let admin = admin(brokers)?;
    let options = AdminOptions::new()
        .operation_timeout(Some(TIMEOUT))
        .request_timeout(Some(TIMEOUT));
    for action in &plan.actions {
        if matches!(action, Action::CannotChange { .. }) {
            continue;
        }
        progress(action);
        let outcome = match action {
            Action::Create(topic) => {
                let mut new = NewTopic::new(
                    &topic.name,
                    topic.partitions,
                    TopicReplication::Fixed(topic.replication_factor),
                );
                for (key, value) in &topic.configs {
                    new = new.set(key, value);
                }
                admin
                    .create_topics(&[new], &options)
                    .await
                    .map(|r| r.into_iter().map(|x| x.map(drop)).collect::<Vec<_>>())
            }
            Action::AddPartitions { topic, to, .. } => {
                let count = usize::try_from(*to).unwrap_or_default();
                admin
                    .create_partitions(&[NewPartitions::new(topic, count)], &options)
                    .await
                    .map(|r| r.into_iter().map(|x| x.map(drop)).collect())
            }
            Action::AlterConfigs { topic, full, .. } => {
                let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
                for (key, value) in full {
                    alter = alter.set(key, value);
                }
                admin.alter_configs(&[alter], &options).await.map(|r| {
                    r.into_iter()
                        .map(|x| x.map(drop).map_err(|(_, code)| (topic.clone(), code)))
                        .collect()
                })
            }
            Action::Delete { topic } => admin
                .delete_topics(&[topic], &options)
                .await
                .map(|r| r.into_iter().map(|x| x.map(drop)).collect()),
            Action::CannotChange { .. } => unreachable!("skipped above"),
        };
        let results = outcome.map_err(|e| PlanError::Kafka(format!("{action:?}: {e}")))?;
        for result in results {
            result.map_err(|(name, code)| PlanError::Kafka(format!("{name}: {code}")))?;
        }
    }
    Ok(())
}
