//! The **notifications** processor (binary `clinic-notifications`, consumer group `clinic-notifications`, DLQ `notifications.dlq`).
//!
//! - Consumes: `clinic.clinics`, `clinic.clinicians`, `clinic.patients`, `clinic.patient_invites`, `notifications.requests`.
//! - Does: sends the transactional emails, each at most once per triggering change.
//! - Produces: `notifications.sent` (compacted log of what was sent); email over SMTP.
//!
//! Status: the crate and its binary exist so the workspace and CI have their final shape; the
//! processing itself is not built yet (the streams runtime, CDC codecs and operators' CLI it
//! builds on are in the `clinic` library now). Until then the binary refuses to start rather than
//! pretend.

/// This processor's name, as used in its consumer group, DLQ and changelog topic names.
pub const NAME: &str = "notifications";
