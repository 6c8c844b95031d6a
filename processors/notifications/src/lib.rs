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

pub mod config;
pub mod model;
pub mod processor;
pub mod sender;
pub mod smtp;
pub mod templates;

/// This processor's name, as used in its consumer group, DLQ and changelog topic names.
pub const NAME: &str = "notifications";

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clinic::streams::runner::{self, Health};
use clinic::streams::{app::Settings as _, effect};

/// Runs the processor and its effect stage side by side until `shutdown` is set; when either
/// stops (an error), the other is told to. `health` reports the processor's readiness and
/// outages; the stage keeps its own outage bookkeeping, since it follows the broker calls of one
/// loop and the two loops run at once.
///
/// # Errors
/// Invalid settings, a sender that cannot be built, or what either loop returns.
pub async fn run_until(
    settings: config::Settings,
    shutdown: Arc<AtomicBool>,
    health: Arc<Health>,
) -> anyhow::Result<()> {
    settings.validate().map_err(anyhow::Error::msg)?;
    let sender = sender::Sender::new(&settings).map_err(anyhow::Error::msg)?;
    let factory = processor::Notifications::factory(&settings);
    let stop = |result: anyhow::Result<()>, flag: &AtomicBool| {
        flag.store(true, Ordering::SeqCst);
        result
    };
    let processing = {
        let (config, shutdown) = (settings.streams.clone(), Arc::clone(&shutdown));
        async move {
            let result = runner::run_until(config, factory, Arc::clone(&shutdown), health).await;
            stop(result, &shutdown)
        }
    };
    let sending = async {
        let own = Arc::new(Health::default());
        let result = effect::run_until(
            settings.streams.clone(),
            processor::stage(),
            sender,
            Arc::clone(&shutdown),
            own,
        )
        .await;
        stop(result, &shutdown)
    };
    let (processed, sent) = tokio::join!(processing, sending);
    processed.and(sent)
}
