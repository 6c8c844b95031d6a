//! Operators' tools: the suite's Kafka side as desired state in files, turned into a plan (a
//! readable diff) and applied. Applying twice changes nothing.
//!
//! - [`topics`]: `topics.yaml` → [`topics::TopicsPlan`] against the cluster ([`kafka`]); the
//!   `clinic topics` commands in [`cli`].
//!
//! - [`schemas`]: the Avro schema files `topics.yaml` names → subjects in the registry.
//!
//! - [`connectors`]: `connectors/*.json` → Kafka Connect's REST API.
//! - [`topology`]: the dataflow those files describe, and the checks that they agree.
//! - [`reconcile`]: whether gatekeeper agrees with the clinic database, and the corrections.
//! - [`dlq`]: dead letters read back and replayed exactly once.
//! - [`status`]: one view of the whole suite's health.
//! - [`watch`]: failed connector tasks restarted with backoff.

pub mod cli;
pub mod connectors;
pub mod dlq;
pub mod kafka;
pub mod reconcile;
pub mod schemas;
pub mod status;
pub mod strimzi;
pub mod topics;
pub mod topology;
pub mod watch;

/// Why a plan could not be made or applied.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The desired-state file is unreadable or invalid.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The cluster could not be read or changed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// The operator asked for something unsafe.
    #[error("{0}")]
    Refused(String),
    /// A database could not be read.
    #[error("database: {0}")]
    Database(String),
}

/// `text` in the ANSI colour `code` when `colour` (plans on a terminal), else as it is.
pub(crate) fn paint(colour: bool, code: &str, text: &str) -> String {
    if colour {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// What the three plans (topics, schemas, connectors) share, so the commands print and report
/// progress alike.
pub trait Plan: serde::Serialize {
    /// One step.
    type Action: Clone;
    /// A plan of just these steps (used to print one step as it is applied).
    fn of(actions: Vec<Self::Action>) -> Self;
    /// Aligned text, coloured when `colour`, ending with a summary line.
    fn render(&self, colour: bool) -> String;
    /// Whether applying would change anything.
    fn has_changes(&self) -> bool;
    /// Whether some difference cannot be applied.
    fn has_blockers(&self) -> bool;
}

impl Plan for topics::TopicsPlan {
    type Action = topics::Action;
    fn of(actions: Vec<Self::Action>) -> Self {
        Self { actions }
    }
    fn render(&self, colour: bool) -> String {
        topics::TopicsPlan::render(self, colour)
    }
    fn has_changes(&self) -> bool {
        topics::TopicsPlan::has_changes(self)
    }
    fn has_blockers(&self) -> bool {
        topics::TopicsPlan::has_blockers(self)
    }
}

impl Plan for schemas::SchemasPlan {
    type Action = schemas::SchemaAction;
    fn of(actions: Vec<Self::Action>) -> Self {
        Self { actions }
    }
    fn render(&self, colour: bool) -> String {
        schemas::SchemasPlan::render(self, colour)
    }
    fn has_changes(&self) -> bool {
        schemas::SchemasPlan::has_changes(self)
    }
    fn has_blockers(&self) -> bool {
        schemas::SchemasPlan::has_blockers(self)
    }
}

impl Plan for connectors::ConnectorsPlan {
    type Action = connectors::ConnectorAction;
    fn of(actions: Vec<Self::Action>) -> Self {
        Self { actions }
    }
    fn render(&self, colour: bool) -> String {
        connectors::ConnectorsPlan::render(self, colour)
    }
    fn has_changes(&self) -> bool {
        connectors::ConnectorsPlan::has_changes(self)
    }
    fn has_blockers(&self) -> bool {
        false
    }
}
