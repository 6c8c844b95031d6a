//! The **deletions** processor (binary `clinic-deletions`, consumer group `clinic-deletions`, DLQ `deletions.dlq`).
//!
//! - Consumes: `user.events` (CloudEvents `users:delete`) and/or a Debezium user-table topic; `clinic.patients`, `clinic.clinicians` as tables by user id.
//! - Does: deletes every patient and clinician record of a deleted user, archiving each first.
//! - Produces: `sink.clinic.patients` / `sink.clinic.clinicians` tombstones, `sink.clinic.patient_deletions` / `sink.clinic.clinician_deletions` archive records.
//!
//! Status: the crate and its binary exist so the workspace and CI have their final shape; the
//! processing itself is not built yet (the streams runtime, CDC codecs and operators' CLI it
//! builds on are in the `clinic` library now). Until then the binary refuses to start rather than
//! pretend.

/// This processor's name, as used in its consumer group, DLQ and changelog topic names.
pub const NAME: &str = "deletions";
