//! `clinic topology`: the dataflow drawn from the desired-state files — `topics.yaml` (who
//! produces and consumes each topic) and the connectors (which topics each reads, which collection
//! it writes) — plus the checks that they agree with each other and with the processors.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use super::PlanError;
use super::connectors::{DesiredConnector, desired as load_connectors};
use super::topics::TopicsFile;

/// The processors of the suite, by the names topics.yaml uses.
pub const PROCESSORS: [&str; 4] = ["permissions", "migrations", "deletions", "notifications"];

/// The dataflow graph.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Dataflow {
    /// Topic → producers.
    pub producers: BTreeMap<String, Vec<String>>,
    /// Topic → consumers.
    pub consumers: BTreeMap<String, Vec<String>>,
    /// Connector → (topics it reads or writes, `db.collection`, is a source).
    pub connectors: BTreeMap<String, ConnectorFlow>,
    /// Topics a suite processor produces with Avro keys or values but no schema file named.
    pub unschematized: Vec<String>,
}

/// What a connector moves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConnectorFlow {
    /// Sink: topics read. Source: topics written (`<db>.<collection>` of its collections, or
    /// of the whole database when it names none).
    pub topics: Vec<String>,
    /// `db.collection` written (sink) or read (source); `db.*` for a whole database.
    pub namespace: String,
    /// Whether it is a source connector.
    pub source: bool,
}

fn flow(connector: &DesiredConnector) -> ConnectorFlow {
    let config = &connector.config;
    let source = config
        .get("connector.class")
        .is_some_and(|c| c.ends_with("SourceConnector"));
    let db = config.get("database").cloned().unwrap_or_default();
    let collection = config.get("collection").cloned();
    let namespace = format!("{db}.{}", collection.clone().unwrap_or_else(|| "*".into()));
    let topics = if source {
        collection
            .map(|c| vec![format!("{db}.{c}")])
            .unwrap_or_default()
    } else {
        config
            .get("topics")
            .map(|t| {
                t.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    ConnectorFlow {
        topics,
        namespace,
        source,
    }
}

impl Dataflow {
    /// Reads `topics.yaml` and every connector directory given.
    ///
    /// # Errors
    /// Unreadable or invalid files.
    pub fn load(topics: &Path, connector_dirs: &[&Path]) -> Result<Self, PlanError> {
        let file = TopicsFile::load(topics)?;
        let mut dataflow = Dataflow::default();
        for (name, spec) in &file.topics {
            dataflow
                .producers
                .insert(name.clone(), spec.producers.clone());
            dataflow
                .consumers
                .insert(name.clone(), spec.consumers.clone());
            let avro_without_schema = [&spec.key, &spec.value]
                .into_iter()
                .flatten()
                .any(|s| s.format == "avro" && s.schema.is_none());
            if avro_without_schema
                && spec
                    .producers
                    .iter()
                    .any(|p| PROCESSORS.contains(&p.as_str()))
            {
                dataflow.unschematized.push(name.clone());
            }
        }
        for dir in connector_dirs {
            for connector in load_connectors(dir)? {
                dataflow
                    .connectors
                    .insert(connector.name.clone(), flow(&connector));
            }
        }
        Ok(dataflow)
    }

    /// Disagreements between the files, and with the processors' declared inputs and outputs
    /// (`declared`: processor → (topics read, topics written)). Empty when consistent.
    pub fn problems(&self, declared: &BTreeMap<String, (Vec<String>, Vec<String>)>) -> Vec<String> {
        let mut problems = Vec::new();
        let topics: BTreeSet<&String> = self.producers.keys().collect();
        for (processor, (reads, writes)) in declared {
            for topic in reads.iter().filter(|t| !topics.contains(t)) {
                problems.push(format!(
                    "processor {processor} reads {topic}, which topics.yaml does not list"
                ));
            }
            for topic in writes.iter().filter(|t| !topics.contains(t)) {
                problems.push(format!(
                    "processor {processor} writes {topic}, which topics.yaml does not list"
                ));
            }
            for topic in reads {
                if self
                    .consumers
                    .get(topic)
                    .is_some_and(|c| !c.contains(processor))
                {
                    problems.push(format!("processor {processor} reads {topic}, but topics.yaml does not name it as a consumer"));
                }
            }
            for topic in writes {
                if self
                    .producers
                    .get(topic)
                    .is_some_and(|p| !p.contains(processor))
                {
                    problems.push(format!("processor {processor} writes {topic}, but topics.yaml does not name it as a producer"));
                }
            }
            for (topic, consumers) in &self.consumers {
                if consumers.contains(processor) && !reads.contains(topic) {
                    problems.push(format!("topics.yaml names {processor} as a consumer of {topic}, but the processor does not read it"));
                }
            }
            for (topic, producers) in &self.producers {
                if producers.contains(processor) && !writes.contains(topic) {
                    problems.push(format!("topics.yaml names {processor} as a producer of {topic}, but the processor does not write it"));
                }
            }
        }
        for topic in &self.unschematized {
            problems.push(format!(
                "{topic} is Avro and produced by a processor, but topics.yaml names no schema file for it"
            ));
        }
        for (name, flow) in &self.connectors {
            for topic in flow.topics.iter().filter(|t| !topics.contains(t)) {
                problems.push(format!(
                    "connector {name} uses {topic}, which topics.yaml does not list"
                ));
            }
        }
        for topic in topics.iter().filter(|t| t.starts_with("sink.")) {
            let sinks: Vec<&String> = self
                .connectors
                .iter()
                .filter(|(_, f)| !f.source && f.topics.contains(topic))
                .map(|(n, _)| n)
                .collect();
            if sinks.is_empty() {
                problems.push(format!("sink topic {topic} has no sink connector"));
            }
            for consumer in self.consumers.get(*topic).into_iter().flatten() {
                if consumer.starts_with("mongo-sink-") && !self.connectors.contains_key(consumer) {
                    problems.push(format!("topics.yaml names {consumer} as a consumer of {topic}, but connectors/ has no such connector"));
                }
            }
        }
        problems
    }

    /// The graph as text: one line per edge, source topics first.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for (topic, producers) in &self.producers {
            let consumers = self.consumers.get(topic).cloned().unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<40} {} -> [{topic}] -> {}",
                "",
                producers.join(", "),
                consumers.join(", ")
            );
        }
        for (name, flow) in &self.connectors {
            if flow.source {
                let _ = writeln!(
                    out,
                    "connector {name}: {} -> {}",
                    flow.namespace,
                    flow.topics.join(", ")
                );
            } else {
                let _ = writeln!(
                    out,
                    "connector {name}: {} -> {}",
                    flow.topics.join(", "),
                    flow.namespace
                );
            }
        }
        out.lines()
            .map(str::trim_start)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The graph as a Mermaid flowchart (topics as hexagons, processors as boxes, collections as
    /// cylinders).
    pub fn render_mermaid(&self) -> String {
        let id = |s: &str| s.replace(['.', '-', ' ', '(', ')'], "_");
        let mut out = String::from("flowchart LR\n");
        let mut nodes = BTreeSet::new();
        for (topic, producers) in &self.producers {
            let _ = writeln!(out, "  t_{}{{{{\"{topic}\"}}}}", id(topic));
            for producer in producers {
                nodes.insert(producer.clone());
                let _ = writeln!(out, "  n_{} --> t_{}", id(producer), id(topic));
            }
            for consumer in self.consumers.get(topic).into_iter().flatten() {
                nodes.insert(consumer.clone());
                let _ = writeln!(out, "  t_{} --> n_{}", id(topic), id(consumer));
            }
        }
        for node in &nodes {
            let _ = writeln!(out, "  n_{}[\"{node}\"]", id(node));
        }
        for (name, flow) in &self.connectors {
            let _ = writeln!(out, "  c_{}[(\"{}\")]", id(&flow.namespace), flow.namespace);
            if flow.source {
                let _ = writeln!(out, "  c_{} --> n_{}", id(&flow.namespace), id(name));
            } else {
                let _ = writeln!(out, "  n_{} --> c_{}", id(name), id(&flow.namespace));
            }
        }
        out
    }
}

/// A processor's declared topics as [`Dataflow::problems`] takes them: (reads, writes).
pub fn declared(topology: &crate::streams::Topology) -> (Vec<String>, Vec<String>) {
    (topology.reads(), topology.writes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(name: &str, class: &str, pairs: &[(&str, &str)]) -> (String, ConnectorFlow) {
        let mut config: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        config.insert("connector.class".into(), class.into());
        (
            name.into(),
            flow(&DesiredConnector {
                name: name.into(),
                config,
            }),
        )
    }

    fn dataflow() -> Dataflow {
        let mut d = Dataflow::default();
        d.producers
            .insert("clinic.patients".into(), vec!["mongo-source-clinic".into()]);
        d.consumers
            .insert("clinic.patients".into(), vec!["permissions".into()]);
        d.producers
            .insert("sink.gatekeeper.perms".into(), vec!["permissions".into()]);
        d.consumers.insert(
            "sink.gatekeeper.perms".into(),
            vec!["mongo-sink-gatekeeper-perms".into()],
        );
        d.connectors.extend([connector(
            "mongo-sink-gatekeeper-perms",
            "com.mongodb.kafka.connect.MongoSinkConnector",
            &[
                ("topics", "sink.gatekeeper.perms"),
                ("database", "gatekeeper"),
                ("collection", "perms"),
            ],
        )]);
        d
    }

    #[test]
    fn a_consistent_dataflow_has_no_problems() {
        let declared = BTreeMap::from([(
            "permissions".to_owned(),
            (
                vec!["clinic.patients".to_owned()],
                vec!["sink.gatekeeper.perms".to_owned()],
            ),
        )]);

        assert_eq!(dataflow().problems(&declared), Vec::<String>::new());
    }

    #[test]
    fn an_unlisted_input_and_a_sink_topic_without_connector_are_problems() {
        let mut d = dataflow();
        d.connectors.clear();
        let declared = BTreeMap::from([(
            "permissions".to_owned(),
            (vec!["clinic.ghosts".to_owned()], vec![]),
        )]);

        let problems = d.problems(&declared);

        assert!(
            problems
                .iter()
                .any(|p| p.contains("reads clinic.ghosts, which topics.yaml does not list")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("sink topic sink.gatekeeper.perms has no sink connector")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("connectors/ has no such connector")),
            "{problems:?}"
        );
    }

    #[test]
    fn an_avro_topic_a_processor_produces_without_a_schema_file_is_a_problem() {
        let dir = std::env::temp_dir().join(format!("topology-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("topics.yaml");
        std::fs::write(
            &file,
            "defaults: { partitions: 1, replication_factor: 1 }\ntopics:\n  out.avro: { value: { format: avro }, producers: [deletions] }\n  \
             out.external: { value: { format: avro }, producers: [identity service] }\n",
        )
        .expect("write");
        let dataflow = Dataflow::load(&file, &[]).expect("loads");
        std::fs::remove_dir_all(&dir).expect("clean up");

        assert_eq!(
            dataflow.problems(&BTreeMap::new()),
            vec!["out.avro is Avro and produced by a processor, but topics.yaml names no schema file for it".to_owned()]
        );
    }

    #[test]
    fn the_repository_as_it_stands_is_consistent_and_draws() {
        let root = std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .expect("run through cargo, which sets CARGO_MANIFEST_DIR"),
        );
        let dataflow = Dataflow::load(
            &root.join("topics.yaml"),
            &[&root.join("connectors"), &root.join("connectors/source")],
        )
        .expect("files load");

        assert_eq!(dataflow.problems(&BTreeMap::new()), Vec::<String>::new());
        let mermaid = dataflow.render_mermaid();
        assert!(mermaid.starts_with("flowchart LR"));
        assert!(
            mermaid.contains("n_mongo_sink_gatekeeper_perms --> c_gatekeeper_perms"),
            "{mermaid}"
        );
        assert!(
            dataflow
                .render_text()
                .contains("connector mongo-source-clinic: clinic.* ->")
        );
    }
}
