//! `topics.yaml`: every topic of the suite, and the plan that brings a cluster to it.
//!
//! The file has `defaults` (partitions, replication factor, configs), `topics` (per topic: any of
//! those overridden, plus key/value format, producer and consumers, which are documentation and
//! feed `clinic topology`), an optional `prefix`, and named `environments` whose overlays replace
//! defaults and per-topic settings (the local stack's single broker needs `replication_factor: 1`).
//! The plan itself is a pure function of (desired, observed), so it is tested without a broker.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::PlanError;

/// Partition count, replication factor and configs of a topic, each optional so layers can be
/// merged (defaults < topic < environment).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Number of partitions.
    pub partitions: Option<i32>,
    /// Replication factor.
    pub replication_factor: Option<i32>,
    /// Topic configs (`cleanup.policy`, `retention.ms`, `min.insync.replicas`, …).
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

impl Settings {
    fn over(&self, base: &Settings) -> Settings {
        let mut configs = base.configs.clone();
        configs.extend(self.configs.clone());
        Settings {
            partitions: self.partitions.or(base.partitions),
            replication_factor: self.replication_factor.or(base.replication_factor),
            configs,
        }
    }
}

/// How a key or value is serialized (documentation for people and `clinic topology`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Serialization {
    /// `avro`, `json`, `string`, …
    pub format: String,
    /// The Avro schema file (relative to `topics.yaml`), for topics the suite produces;
    /// `clinic schemas` registers it under `<topic>-key` / `<topic>-value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The subject's compatibility level (default `BACKWARD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compatibility: Option<String>,
}

/// One topic in the file. (Its settings are spelled out rather than a flattened [`Settings`],
/// because serde ignores `deny_unknown_fields` through `flatten`, and a typo must be an error.)
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Overrides the default partition count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Overrides the default replication factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
    /// Laid over the default configs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, String>,
    /// Key serialization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Serialization>,
    /// Value serialization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Serialization>,
    /// Who writes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub producers: Vec<String>,
    /// Who reads it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<String>,
}

impl TopicSpec {
    /// The topic's own settings layer.
    pub fn settings(&self) -> Settings {
        Settings {
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            configs: self.configs.clone(),
        }
    }
}

/// An environment's overlay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// Replaces the global prefix.
    pub prefix: Option<String>,
    /// Laid over `defaults`.
    #[serde(default)]
    pub defaults: Settings,
    /// Laid over individual topics.
    #[serde(default)]
    pub topics: BTreeMap<String, Settings>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsFile {
    /// Prefix in front of every topic name.
    #[serde(default)]
    pub prefix: String,
    /// Settings every topic starts from.
    pub defaults: Settings,
    /// The topics, by name (without prefix).
    pub topics: BTreeMap<String, TopicSpec>,
    /// Named overlays (`local`, `production`, …).
    #[serde(default)]
    pub environments: BTreeMap<String, Environment>,
}

/// A topic as it should be on the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredTopic {
    /// Full name, prefix included.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i32,
    /// Configs.
    pub configs: BTreeMap<String, String>,
}

/// The topics of a file for one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The prefix in force.
    pub prefix: String,
    /// The topics, by full name.
    pub topics: BTreeMap<String, DesiredTopic>,
}

impl TopicsFile {
    /// Reads and parses a file.
    ///
    /// # Errors
    /// Unreadable or invalid YAML, unknown fields.
    pub fn load(path: &Path) -> Result<Self, PlanError> {
        let file_error = |message: String| PlanError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        serde_yaml_ng::from_str(&text).map_err(|e| file_error(e.to_string()))
    }

    /// The desired topics for `environment` (none: the file as written).
    ///
    /// # Errors
    /// An unknown environment, or a topic left without partitions or replication factor.
    pub fn desired(&self, environment: Option<&str>) -> Result<Desired, PlanError> {
        let overlay = match environment {
            None => Environment::default(),
            Some(name) => self.environments.get(name).cloned().ok_or_else(|| {
                PlanError::Refused(format!(
                    "no environment {name:?} in topics.yaml (known: {})",
                    self.environments
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
        };
        if let Some(unknown) = overlay
            .topics
            .keys()
            .find(|t| !self.topics.contains_key(*t))
        {
            return Err(PlanError::Refused(format!(
                "environment overlay names unknown topic {unknown}"
            )));
        }
        let prefix = overlay
            .prefix
            .clone()
            .unwrap_or_else(|| self.prefix.clone());
        let defaults = overlay.defaults.over(&self.defaults);
        let mut topics = BTreeMap::new();
        for (name, spec) in &self.topics {
            let mut settings = spec.settings().over(&defaults);
            if let Some(extra) = overlay.topics.get(name) {
                settings = extra.over(&settings);
            }
            let full = format!("{prefix}{name}");
            let missing = |what: &str| PlanError::Refused(format!("topic {name} has no {what}"));
            topics.insert(
                full.clone(),
                DesiredTopic {
                    name: full,
                    partitions: settings.partitions.ok_or_else(|| missing("partitions"))?,
                    replication_factor: settings
                        .replication_factor
                        .ok_or_else(|| missing("replication_factor"))?,
                    configs: settings.configs,
                },
            );
        }
        Ok(Desired { prefix, topics })
    }
}

impl Desired {
    /// The same topics under `prefix` instead (the deployment's, [`crate::endpoints::topic_prefix`]).
    #[must_use]
    pub fn with_prefix(self, prefix: &str) -> Self {
        let topics = self
            .topics
            .into_values()
            .map(|mut topic| {
                let name = topic.name.strip_prefix(&self.prefix).unwrap_or(&topic.name);
                topic.name = format!("{prefix}{name}");
                (topic.name.clone(), topic)
            })
            .collect();
        Self {
            prefix: prefix.to_owned(),
            topics,
        }
    }
}

/// A topic as it is on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedTopic {
    /// Name.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Replication factor (of partition 0).
    pub replication_factor: i32,
    /// Effective configs (every source), for comparing with desired values.
    pub configs: BTreeMap<String, String>,
    /// The configs set on the topic itself (what a non-incremental alter must carry over).
    pub dynamic: BTreeMap<String, String>,
}

/// One config change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigChange {
    /// Config name.
    pub key: String,
    /// Current effective value.
    pub from: Option<String>,
    /// Desired value.
    pub to: String,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Create a missing topic.
    Create(DesiredTopic),
    /// Raise the partition count.
    AddPartitions {
        /// Topic.
        topic: String,
        /// Current count.
        from: i32,
        /// Desired count.
        to: i32,
    },
    /// Change configs.
    AlterConfigs {
        /// Topic.
        topic: String,
        /// The changes.
        changes: Vec<ConfigChange>,
        /// The full set of topic-level configs to send (current dynamic ones plus the changes),
        /// since the admin API's AlterConfigs replaces them all.
        #[serde(skip)]
        full: BTreeMap<String, String>,
    },
    /// Delete a topic the file does not list (only with `--prune`).
    Delete {
        /// Topic.
        topic: String,
    },
    /// A difference that cannot be fixed in place.
    CannotChange {
        /// Topic.
        topic: String,
        /// Why.
        reason: String,
    },
}

/// The steps that bring the cluster to the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TopicsPlan {
    /// The steps, topic by topic.
    pub actions: Vec<Action>,
}

/// Topics no plan touches: Kafka's and Connect's own.
pub fn is_internal(topic: &str) -> bool {
    topic.starts_with('_')
}

/// Compares the desired topics with the observed ones. With `prune`, observed topics under the
/// prefix that the file does not list are deleted (pruning needs a non-empty prefix, so a plan
/// never deletes topics this file does not own).
///
/// # Errors
/// `prune` without a prefix.
pub fn plan(
    desired: &Desired,
    observed: &[ObservedTopic],
    prune: bool,
) -> Result<TopicsPlan, PlanError> {
    if prune && desired.prefix.is_empty() {
        return Err(PlanError::Refused(
            "--prune needs a topic prefix: without one every topic on the cluster would be a candidate".into(),
        ));
    }
    let by_name: BTreeMap<&str, &ObservedTopic> =
        observed.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut actions = Vec::new();
    for want in desired.topics.values() {
        let Some(have) = by_name.get(want.name.as_str()) else {
            actions.push(Action::Create(want.clone()));
            continue;
        };
        if want.partitions > have.partitions {
            actions.push(Action::AddPartitions {
                topic: want.name.clone(),
                from: have.partitions,
                to: want.partitions,
            });
        } else if want.partitions < have.partitions {
            actions.push(Action::CannotChange {
                topic: want.name.clone(),
                reason: format!(
                    "has {} partitions, wants {}: Kafka cannot remove partitions",
                    have.partitions, want.partitions
                ),
            });
        }
        if want.replication_factor != have.replication_factor {
            actions.push(Action::CannotChange {
                topic: want.name.clone(),
                reason: format!(
                    "replication factor is {}, wants {}: needs a partition reassignment",
                    have.replication_factor, want.replication_factor
                ),
            });
        }
        let changes: Vec<ConfigChange> = want
            .configs
            .iter()
            .filter(|(key, value)| have.configs.get(*key) != Some(value))
            .map(|(key, value)| ConfigChange {
                key: key.clone(),
                from: have.configs.get(key).cloned(),
                to: value.clone(),
            })
            .collect();
        if !changes.is_empty() {
            let mut full = have.dynamic.clone();
            full.extend(want.configs.clone());
            actions.push(Action::AlterConfigs {
                topic: want.name.clone(),
                changes,
                full,
            });
        }
    }
    if prune {
        for have in observed {
            if have.name.starts_with(&desired.prefix)
                && !is_internal(&have.name)
                && !desired.topics.contains_key(&have.name)
            {
                actions.push(Action::Delete {
                    topic: have.name.clone(),
                });
            }
        }
    }
    Ok(TopicsPlan { actions })
}

impl TopicsPlan {
    /// Whether applying would change anything it can change.
    pub fn has_changes(&self) -> bool {
        self.actions
            .iter()
            .any(|a| !matches!(a, Action::CannotChange { .. }))
    }

    /// Whether some difference cannot be applied.
    pub fn has_blockers(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::CannotChange { .. }))
    }

    /// The plan as aligned text: `+` create, `~` change, `-` delete, `!` cannot change; coloured
    /// when `colour`. Ends with a summary line.
    pub fn render(&self, colour: bool) -> String {
        let paint = |code: &str, text: &str| super::paint(colour, code, text);
        let width = self
            .actions
            .iter()
            .map(|a| topic_of(a).len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        let (mut create, mut change, mut delete, mut blocked) = (0, 0, 0, 0);
        for action in &self.actions {
            let topic = format!("{:width$}", topic_of(action));
            let line = match action {
                Action::Create(t) => {
                    create += 1;
                    let configs = t
                        .configs
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    paint(
                        "32",
                        &format!(
                            "+ {topic}  create: {} partitions, replication {}{}{configs}",
                            t.partitions,
                            t.replication_factor,
                            if configs.is_empty() { "" } else { ", " }
                        ),
                    )
                }
                Action::AddPartitions { from, to, .. } => {
                    change += 1;
                    paint("33", &format!("~ {topic}  partitions {from} -> {to}"))
                }
                Action::AlterConfigs { changes, .. } => {
                    change += 1;
                    let list = changes
                        .iter()
                        .map(|c| {
                            format!(
                                "{} {} -> {}",
                                c.key,
                                c.from.as_deref().unwrap_or("(unset)"),
                                c.to
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    paint("33", &format!("~ {topic}  config {list}"))
                }
                Action::Delete { .. } => {
                    delete += 1;
                    paint("31", &format!("- {topic}  delete (not in topics.yaml)"))
                }
                Action::CannotChange { reason, .. } => {
                    blocked += 1;
                    paint(
                        "35",
                        &format!("! {topic}  cannot change in place: {reason}"),
                    )
                }
            };
            let _ = writeln!(out, "{line}");
        }
        let _ = write!(
            out,
            "Topics: {create} to create, {change} to change, {delete} to delete, {blocked} that cannot change in place."
        );
        if self.actions.is_empty() {
            out = "Topics: no changes; the cluster matches topics.yaml.".to_owned();
        }
        out
    }
}

fn topic_of(action: &Action) -> &str {
    match action {
        Action::Create(t) => &t.name,
        Action::AddPartitions { topic, .. }
        | Action::AlterConfigs { topic, .. }
        | Action::Delete { topic }
        | Action::CannotChange { topic, .. } => topic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
prefix: ""
defaults: { partitions: 6, replication_factor: 3, configs: { min.insync.replicas: "2" } }
topics:
  clinic.patients: { producers: [mongo-source], consumers: [permissions] }
  notifications.sent: { configs: { cleanup.policy: compact } }
environments:
  local:
    prefix: "dev."
    defaults: { replication_factor: 1, configs: { min.insync.replicas: "1" } }
    topics:
      clinic.patients: { partitions: 3 }
"#;

    fn file() -> TopicsFile {
        serde_yaml_ng::from_str(FILE).expect("valid")
    }

    #[test]
    fn the_deployment_prefix_replaces_the_files() {
        let desired = file().desired(Some("local")).expect("desired");
        let from = desired.prefix.clone();
        let count = desired.topics.len();

        let prefixed = desired.with_prefix("qa1.");

        assert_eq!(prefixed.prefix, "qa1.");
        assert_eq!(prefixed.topics.len(), count);
        for (name, topic) in &prefixed.topics {
            assert_eq!(name, &topic.name);
            assert!(name.starts_with("qa1."), "{name}");
            assert!(from.is_empty() || !name.contains(&from), "{name}");
        }
    }

    fn observed(name: &str, partitions: i32, configs: &[(&str, &str)]) -> ObservedTopic {
        let configs: BTreeMap<String, String> = configs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        ObservedTopic {
            name: name.into(),
            partitions,
            replication_factor: 1,
            configs: configs.clone(),
            dynamic: configs,
        }
    }

    #[test]
    fn environment_overlays_replace_defaults_and_topic_settings() {
        let desired = file().desired(Some("local")).expect("desired");

        let patients = &desired.topics["dev.clinic.patients"];
        let sent = &desired.topics["dev.notifications.sent"];
        assert_eq!((patients.partitions, patients.replication_factor), (3, 1));
        assert_eq!(sent.partitions, 6);
        assert_eq!(sent.configs["cleanup.policy"], "compact");
        assert_eq!(sent.configs["min.insync.replicas"], "1");
    }

    #[test]
    fn plan_creates_raises_alters_and_reports_what_cannot_change() {
        let desired = file().desired(Some("local")).expect("desired");
        let cluster = [
            observed("dev.clinic.patients", 1, &[("min.insync.replicas", "1")]),
            observed(
                "dev.notifications.sent",
                12,
                &[
                    ("min.insync.replicas", "1"),
                    ("cleanup.policy", "delete"),
                    ("retention.ms", "5"),
                ],
            ),
        ];

        let plan = plan(&desired, &cluster, false).expect("plan");

        assert_eq!(
            plan.actions,
            [
                Action::AddPartitions {
                    topic: "dev.clinic.patients".into(),
                    from: 1,
                    to: 3
                },
                Action::CannotChange {
                    topic: "dev.notifications.sent".into(),
                    reason: "has 12 partitions, wants 6: Kafka cannot remove partitions".into()
                },
                Action::AlterConfigs {
                    topic: "dev.notifications.sent".into(),
                    changes: vec![ConfigChange {
                        key: "cleanup.policy".into(),
                        from: Some("delete".into()),
                        to: "compact".into()
                    }],
                    full: [
                        ("cleanup.policy", "compact"),
                        ("min.insync.replicas", "1"),
                        ("retention.ms", "5")
                    ]
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .into(),
                },
            ]
        );
        assert!(plan.has_changes() && plan.has_blockers());
    }

    #[test]
    fn a_matching_cluster_plans_nothing_and_prune_only_touches_the_prefix() {
        let desired = file().desired(Some("local")).expect("desired");
        let cluster = [
            observed("dev.clinic.patients", 3, &[("min.insync.replicas", "1")]),
            observed(
                "dev.notifications.sent",
                6,
                &[("min.insync.replicas", "1"), ("cleanup.policy", "compact")],
            ),
            observed("dev.stale", 1, &[]),
            observed("prod.clinic.patients", 1, &[]),
            observed("__consumer_offsets", 50, &[]),
        ];

        assert_eq!(
            plan(&desired, &cluster, false).expect("plan"),
            TopicsPlan::default()
        );
        let pruned = plan(&desired, &cluster, true).expect("plan");
        assert_eq!(
            pruned.actions,
            [Action::Delete {
                topic: "dev.stale".into()
            }]
        );
    }

    #[test]
    fn pruning_without_a_prefix_is_refused() {
        let desired = file().desired(None).expect("desired");

        assert!(matches!(
            plan(&desired, &[], true),
            Err(PlanError::Refused(_))
        ));
    }

    #[test]
    fn unknown_fields_and_environments_are_errors() {
        assert!(
            serde_yaml_ng::from_str::<TopicsFile>("defaults: {}\ntopics: {}\nextra: 1").is_err()
        );
        assert!(
            serde_yaml_ng::from_str::<TopicsFile>("defaults: {}\ntopics: { t: { partition: 3 } }")
                .is_err()
        );
        assert!(
            matches!(file().desired(Some("staging")), Err(PlanError::Refused(m)) if m.contains("local"))
        );
    }

    #[test]
    fn the_repository_topics_file_is_valid_for_every_environment() {
        let path = std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .expect("run through cargo, which sets CARGO_MANIFEST_DIR"),
        )
        .join("topics.yaml");
        let file = TopicsFile::load(&path).expect("topics.yaml parses");

        for environment in
            std::iter::once(None).chain(file.environments.keys().map(|e| Some(e.as_str())))
        {
            let desired = file.desired(environment).expect("complete settings");
            assert_eq!(desired.topics.len(), file.topics.len());
        }
    }
}
