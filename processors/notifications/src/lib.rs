//! The **notifications** processor (binary `clinic-notifications`, consumer group `clinic-notifications`, DLQ `notifications.dlq`).
//!
//! - Consumes: `clinic.clinics`, `clinic.clinicians`, `clinic.patients`, `clinic.patient_invites`, `notifications.requests`.
//! - Does: sends the transactional emails, each at most once per triggering change.
//! - Produces: `notifications.sent` (compacted log of what was sent); email over SMTP.
//!
//! Status: built so far is how email leaves over SMTP ([`smtp`]: an effect for the runtime's
//! effect stage, tested against Mailpit). The triggers, tables, templates, the Tidepool-mailer
//! sender and the binary are not built yet; until they are, the binary refuses to start rather
//! than pretend.

/// This processor's name, as used in its consumer group, DLQ and changelog topic names.
pub const NAME: &str = "notifications";

pub mod smtp;
