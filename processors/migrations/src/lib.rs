//! The **migrations** processor (binary `clinic-migrations`, consumer group
//! `clinic-migrations`, DLQ `migrations.dlq`): a legacy clinician account (a user patients
//! shared their data with directly, through gatekeeper's `perms`) becomes a clinic.
//!
//! - Trigger: the insert of a PENDING document into `clinic.migrations` (`{_id, clinicId,
//!   userId: <legacy clinician>, status}`, as the API's migration endpoints write it), routed to
//!   the legacy clinician's task and handled there only once every table below has been read to
//!   where it stood when the insert arrived ([`clinic::streams::Topology::stream_after_others`]).
//! - Tables (projections, each restored from its changelog, each routed through a repartition
//!   topic to the task that looks it up): legacy shares from `gatekeeper.perms` by grantee; the clinics' patients by clinic and user from
//!   `clinic.patients`; clinic names from `clinic.clinics` (in every task); profiles (name, birth date, MRN,
//!   address) from the profile store's CDC topic (`[inputs.profiles]`, Tidepool's
//!   `seagull.seagull`); usernames (addresses) from `users:create` / `users:update` on
//!   `user.events`.
//! - A migration: status RUNNING to `sink.clinic.migrations`; then, per share with the legacy
//!   clinician (never the clinician's own row): a patient document in the clinic as the API
//!   writes patients (`isMigrated`, `legacyClinicianIds`, permissions kept to view / upload /
//!   note / custodian, profile fields or empty strings) to `sink.clinic.patients` under a
//!   deterministic `_id`, unless the user is a patient of the clinic already (left as it is;
//!   with the clinic's `mrnSettings.unique`, an MRN another patient has is left out);
//!   the share's tombstone to `sink.gatekeeper.perms`; a `migrate_patient` request on
//!   `notifications.requests` when the patient has an address. At the end status COMPLETED and
//!   a `clinic_migration_complete` request for the legacy clinician once every share is moved.
//!   Request ids are the migration, the template and the recipient.
//! - Three keys: the legacy clinician's task sends each share on to its patient's task (which
//!   adds their profile and address), that one to the clinic's task (which writes the patient,
//!   the tombstone and the email), which tells the migration (see [`names`]). So the processor
//!   runs as several replicas sharing the partitions.
//! - Chunks: `[migration] chunk_size` shares per step. Each step is one record (the trigger, then
//!   the processor's own records on its `steps` repartition topic) whose outputs, store writes
//!   and progress commit together, so a crash or a rebalance resumes after the last committed step and
//!   nothing is written twice or skipped.
//! - A share that appears while its grantee's migration runs is moved too; one that appears
//!   after the migration completed stays. A repeated PENDING insert does nothing. A migration
//!   whose clinic does not exist, or whose user has another one running, ends FAILED with a
//!   `failureReason`, and nothing else is written. Malformed records go to the DLQ.
//! - Guarantees: those of the streams runner (exactly-once by default).
//! - Settings: [`config::Settings`].

pub mod config;
pub mod model;
pub mod names;
pub mod processor;

/// This processor's name, as used in its consumer group, DLQ and changelog topic names.
pub const NAME: &str = "migrations";

/// The binary: the processor on the shared main ([`clinic::streams::app`]).
pub fn app() -> clinic::streams::app::App<config::Settings> {
    clinic::streams::app::App::processor(
        "clinic-migrations",
        "The clinic suite's legacy clinician migrations",
        processor::Migrations::factory,
    )
}
