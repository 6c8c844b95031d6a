//! The **permissions** processor (binary `clinic-permissions`, consumer group `clinic-permissions`, DLQ `permissions.dlq`).
//!
//! - Consumes: `clinic.patients`, `clinic.clinicians`.
//! - Does: projects each patient's grant and each clinician's membership into the records gatekeeper reads.
//! - Produces: `sink.gatekeeper.patient_permissions`, `sink.gatekeeper.clinician_permissions` (upserts keyed by document id, tombstones on delete).
//!
//! Status: the crate and its binary exist so the workspace and CI have their final shape; the
//! processing itself is not built yet (the streams runtime, CDC codecs and operators' CLI it
//! builds on are in the `clinic` library now). Until then the binary refuses to start rather than
//! pretend.

/// This processor's name, as used in its consumer group, DLQ and changelog topic names.
pub const NAME: &str = "permissions";
