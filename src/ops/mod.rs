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

pub mod cli;
pub mod connectors;
pub mod kafka;
pub mod schemas;
pub mod topics;
pub mod topology;

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
}
