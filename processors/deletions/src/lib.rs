//! The **deletions** processor (binary `clinic-deletions`, consumer group `clinic-deletions`,
//! DLQ `deletions.dlq`).
//!
//! - Consumes: `user.events` (CloudEvents `users:delete`, binary or structured Kafka binding;
//!   the data's `userid` names the user) and/or, by [`config::UserTable`], a Debezium topic of
//!   the identity system's user table whose row deletes (`op = d`) delete the user;
//!   `clinic.patients` and `clinic.clinicians`, kept as tables indexed by user and by clinic.
//! - On a user's deletion, for each of their patient and clinician documents: an archive record
//!   `{_id, deletedTime, patient|clinician: <full document>}` to `sink.clinic.patient_deletions`
//!   / `sink.clinic.clinician_deletions` (canonical Extended JSON, so ObjectIds and dates keep
//!   their types; `_id` = the deleted document's, so a replay archives nothing twice) and a
//!   tombstone to `sink.clinic.patients` / `sink.clinic.clinicians`, all in the record's
//!   transaction. A clinic left without a clinician (a member, or a pending invite: Tidepool's
//!   rule counts both) then loses its non-custodial patients the same way, and a clinic the
//!   user administered gets its `admins` without them (`sink.clinic.clinics`, `{_id, admins}`).
//!   A deletion is routed on only once every partition of the clinic tables, whichever replica
//!   reads it, has been read and committed to where it ended when the deletion arrived
//!   ([`clinic::streams::Topology::stream_after_others`]), so the members rule never sees a
//!   lagging clinician list; a document of a deleted user that arrives later still is
//!   removed on arrival.
//! - A `users:update` whose `username` changed to another address gives it to every patient and
//!   clinician record of the user (`{_id, email, updatedTime}` to `sink.clinic.patients` /
//!   `sink.clinic.clinicians`), as Tidepool's worker has the clinic service do; a clinician record
//!   whose clinic has another clinician with that address keeps its own
//!   (`clinic_deletions_email_conflicts_total`, a WARN).
//! - Other event types are ignored and counted (`clinic_deletions_events_ignored_total`);
//!   malformed events go to the DLQ.
//! - **Routed by clinic** through repartition topics ([`clinic::streams::Topology::repartition`]):
//!   each task sends a patient's or clinician's change on to the task of its clinic, and a user
//!   event to every task; each task keeps the documents of its clinics and acts on a user's
//!   records there. So it runs as several replicas sharing the partitions (the inputs,
//!   repartition topics and changelogs need the same partition count).
//! - State: the patient and clinician documents (and their indexes) live on disk when
//!   `streams.state_dir` is set (the chart gives the pod a volume): memory stays bounded
//!   whatever their number, and a restart replays only the changelogs' tails
//!   ([`clinic::streams::disk`]); without it, in memory.
//! - Guarantees: those of the streams runner (exactly-once by default).
//! - Settings: [`config::Settings`].

pub mod config;
pub mod model;
pub mod names;
pub mod processor;

/// This processor's name, as used in its consumer group, DLQ and changelog topic names.
pub const NAME: &str = "deletions";

/// Metric names of this processor.
pub mod metrics {
    /// User events of other types (and Debezium non-deletes), ignored.
    pub const IGNORED: &str = "clinic_deletions_events_ignored_total";
    /// Clinician records that kept their address on a `users:update`: another clinician of the
    /// same clinic has the new one.
    pub const EMAIL_CONFLICTS: &str = "clinic_deletions_email_conflicts_total";
}

/// The binary: the processor on the shared main ([`clinic::streams::app`]).
pub fn app() -> clinic::streams::app::App<config::Settings> {
    clinic::streams::app::App::processor(
        "clinic-deletions",
        "The clinic suite's user deletions: archives and removes a deleted user's records",
        processor::Deletions::factory,
    )
}
