//! The **notifications** processor (binary `clinic-notifications`, consumer group
//! `clinic-notifications`, DLQ `notifications.dlq`): the clinic service's transactional emails,
//! each sent once.
//!
//! - Consumes: `clinic.clinics`, `clinic.clinicians`, `clinic.patients`,
//!   `clinic.patient_invites`, `notifications.requests` (Avro [`clinic::email::EmailRequest`]s
//!   of other processors) and `user.events` (addresses).
//! - Decides (pure, exactly-once, [`processor`]): which change calls for which email, to whom,
//!   with which variables, under a deterministic id; writes each to `notifications.outbox`.
//!   Clinics, clinicians and users' addresses are global tables (read whole by every instance),
//!   patients a partitioned table; they give names and addresses.
//! - Sends (the runtime's effect stage, [`sender`]): reads the outbox `read_committed`, skips
//!   ids already in `notifications.sent` (compacted), sends over SMTP ([`smtp`], rendering
//!   [`templates`]) or as Tidepool mailer CloudEvents, records the id. A crash repeats at most
//!   the email in flight; an SMTP 5xx or an unusable request goes to the DLQ with the reason.
//! - Changes and requests older than `notifications.max_age` (24 h) update the tables but send
//!   nothing.
//! - Runs as **several replicas**: the lookups by clinic and by user go to the global tables,
//!   the triggers are partitioned streams, and an email waiting for a table's change waits in
//!   the task that decided it.
//! - Settings: [`config::Settings`]; `clinic-notifications render <template>` shows an email
//!   without sending it.

pub mod commands;
pub mod config;
pub mod model;
pub mod processor;
pub mod sender;
pub mod smtp;
pub mod templates;

/// This processor's name, as used in its consumer group, DLQ and changelog topic names.
pub const NAME: &str = "notifications";

/// The binary: the processor and its effect stage (the [`sender::Sender`] the settings choose)
/// on the shared main ([`clinic::streams::app`]), with the `render` subcommand.
pub fn app() -> clinic::streams::app::App<config::Settings, commands::Command> {
    clinic::streams::app::App::processor(
        "clinic-notifications",
        "The clinic suite's transactional emails",
        processor::Notifications::factory,
    )
    .with_effect(|settings| Ok((processor::stage(), sender::Sender::new(settings)?)))
    .with_commands(commands::run)
}
