//! The **notifications** processor (binary `clinic-notifications`, consumer group `clinic-notifications`, DLQ `notifications.dlq`).
//!
//! - Consumes: `clinic.clinics`, `clinic.clinicians`, `clinic.patients`, `clinic.patient_invites`, `notifications.requests`.
//! - Does: sends the transactional emails, each at most once per triggering change.
//! - Produces: `notifications.sent` (compacted log of what was sent); email over SMTP.
//!
//! Status: the crate and its binary exist so the workspace, CI and the chart have their final
//! shape; the processing itself is not built yet (it needs the streams runtime and CDC codecs in
//! the `clinic` library first). Until then the binary refuses to start rather than pretend.

/// This processor's name, as used in its consumer group, DLQ and changelog topic names.
pub const NAME: &str = "notifications";
