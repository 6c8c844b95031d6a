//! `clinic topics` against the real broker: plan → apply → plan is empty, drift made behind the
//! CLI's back shows and is repaired, what cannot change in place is reported, prune stays inside
//! the prefix.

use std::collections::BTreeMap;
use std::time::Duration;

use clinic::ops::kafka;
use clinic::ops::topics::{Action, TopicsFile, TopicsPlan, plan};
use clinic::smoke::unique;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

use crate::helpers;

fn file(prefix: &str, partitions: i32, policy: &str, with_extra: bool) -> TopicsFile {
    let extra = if with_extra { "  extra: {}\n" } else { "" };
    let text = format!(
        "prefix: \"{prefix}\"\ndefaults: {{ partitions: {partitions}, replication_factor: 1, configs: {{ min.insync.replicas: \"1\" }} }}\n\
         topics:\n  events: {{}}\n  sent: {{ configs: {{ cleanup.policy: {policy}, retention.ms: \"86400000\" }} }}\n{extra}"
    );
    serde_yaml_ng::from_str(&text).expect("valid file")
}

async fn plan_for(brokers: &str, file: &TopicsFile, prune: bool) -> TopicsPlan {
    let desired = file.desired(None).expect("desired");
    let observed = kafka::observe(brokers).await.expect("observe");
    plan(&desired, &observed, prune).expect("plan")
}

#[tokio::test]
async fn plan_apply_plan_shows_no_changes_and_apply_twice_changes_nothing() {
    let brokers = helpers::stack(&["kafka"]).await.kafka_brokers;
    let prefix = format!("{}.", unique("topics"));
    let wanted = file(&prefix, 2, "compact", false);

    let first = plan_for(&brokers, &wanted, false).await;
    kafka::apply(&brokers, &first, |_| {}).await.expect("apply");
    let second = plan_for(&brokers, &wanted, false).await;
    kafka::apply(&brokers, &second, |_| {})
        .await
        .expect("apply again");
    let third = plan_for(&brokers, &wanted, false).await;

    assert_eq!(first.actions.len(), 2);
    assert!(first.actions.iter().all(|a| matches!(a, Action::Create(_))));
    assert_eq!(second, TopicsPlan::default());
    assert_eq!(third, TopicsPlan::default());
}

#[tokio::test]
async fn drift_made_behind_the_clis_back_is_planned_and_repaired() {
    let brokers = helpers::stack(&["kafka"]).await.kafka_brokers;
    let prefix = format!("{}.", unique("topics"));
    let wanted = file(&prefix, 2, "compact", false);
    kafka::apply(&brokers, &plan_for(&brokers, &wanted, false).await, |_| {})
        .await
        .expect("apply");
    // Someone changes a managed config and adds an unmanaged one by hand.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("admin");
    let sent = format!("{prefix}sent");
    let by_hand = AlterConfig::new(ResourceSpecifier::Topic(&sent))
        .set("cleanup.policy", "delete")
        .set("retention.ms", "86400000")
        .set("min.insync.replicas", "1")
        .set("segment.bytes", "10485760");
    admin
        .alter_configs(&[by_hand], &AdminOptions::new())
        .await
        .expect("alter")[0]
        .as_ref()
        .expect("altered");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let drift = plan_for(&brokers, &wanted, false).await;
    kafka::apply(&brokers, &drift, |_| {})
        .await
        .expect("repair");
    let after = plan_for(&brokers, &wanted, false).await;
    let observed = kafka::observe(&brokers).await.expect("observe");

    let Action::AlterConfigs { topic, changes, .. } = &drift.actions[0] else {
        panic!("{drift:?}")
    };
    assert_eq!(topic, &sent);
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (
            changes[0].key.as_str(),
            changes[0].from.as_deref(),
            changes[0].to.as_str()
        ),
        ("cleanup.policy", Some("delete"), "compact")
    );
    assert_eq!(after, TopicsPlan::default());
    let configs: &BTreeMap<String, String> = &observed
        .iter()
        .find(|t| t.name == sent)
        .expect("topic")
        .dynamic;
    assert_eq!(
        configs.get("segment.bytes").map(String::as_str),
        Some("10485760"),
        "unmanaged configs are kept"
    );
}

#[tokio::test]
async fn fewer_partitions_cannot_change_and_prune_deletes_only_under_the_prefix() {
    let brokers = helpers::stack(&["kafka"]).await.kafka_brokers;
    let prefix = format!("{}.", unique("topics"));
    kafka::apply(
        &brokers,
        &plan_for(&brokers, &file(&prefix, 3, "compact", true), false).await,
        |_| {},
    )
    .await
    .expect("apply");

    let smaller = plan_for(&brokers, &file(&prefix, 2, "compact", false), true).await;
    kafka::apply(&brokers, &smaller, |_| {})
        .await
        .expect("apply what can be");
    let after = plan_for(&brokers, &file(&prefix, 2, "compact", false), true).await;

    let blocked = smaller
        .actions
        .iter()
        .filter(|a| matches!(a, Action::CannotChange { .. }))
        .count();
    let deleted: Vec<&Action> = smaller
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Delete { .. }))
        .collect();
    assert_eq!(blocked, 2, "{smaller:?}");
    assert_eq!(
        deleted,
        [&Action::Delete {
            topic: format!("{prefix}extra")
        }]
    );
    assert!(after.has_blockers() && !after.has_changes(), "{after:?}");
}
