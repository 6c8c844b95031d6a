//! The topics and stores the processor names: its settings check them, its logic uses them.

/// Input topic (table of patient documents).
pub const PATIENTS: &str = "clinic.patients";
/// Input topic (table of clinician documents).
pub const CLINICIANS: &str = "clinic.clinicians";
/// Input topic of CloudEvents from the identity services.
pub const USER_EVENTS: &str = "user.events";
/// Output: tombstones of deleted patients.
pub const SINK_PATIENTS: &str = "sink.clinic.patients";
/// Output: tombstones of deleted clinicians.
pub const SINK_CLINICIANS: &str = "sink.clinic.clinicians";
/// Output: the `admins` of a clinic a deleted admin was in (`{_id, admins}`, `$set` by the sink).
pub const SINK_CLINICS: &str = "sink.clinic.clinics";
/// Output: patient archive records.
pub const PATIENT_DELETIONS: &str = "sink.clinic.patient_deletions";
/// Output: clinician archive records.
pub const CLINICIAN_DELETIONS: &str = "sink.clinic.clinician_deletions";

/// Repartition topic: the patients' changes, re-keyed by their clinic (the CDC topics are keyed
/// by document), so one task holds a clinic's patients and clinicians together.
pub const PATIENT_CHANGES: &str = "patients-by-clinic";
/// Repartition topic: the clinicians' changes, re-keyed by their clinic.
pub const CLINICIAN_CHANGES: &str = "clinicians-by-clinic";
/// Repartition topic: user deletions and address changes ([`crate::model::UserEvent`]), to every
/// partition: each task acts on the user's records in the clinics it holds.
pub const USER_CHANGES: &str = "user-events";

/// Store: where each document's changes go (`p/<table key>`, `c/<table key>` → the repartition
/// key: its clinic's table key, or its own for a document without a clinic).
pub const ROUTES: &str = "routes";
/// Store: patient documents by `_id` (BSON, `Context::put_document`).
pub const PATIENT_STORE: &str = "patients";
/// Store: clinician documents by `_id`.
pub const CLINICIAN_STORE: &str = "clinicians";
/// Index of `patients`, kept by the runtime: `<user>|<patient _id>`.
pub const PATIENTS_BY_USER: &str = "patients_by_user";
/// Index of `patients`: `<clinic>|<patient _id>`.
pub const PATIENTS_BY_CLINIC: &str = "patients_by_clinic";
/// Index of `clinicians`: `<user>|<clinician _id>`.
pub const CLINICIANS_BY_USER: &str = "clinicians_by_user";
/// Index of `clinicians`: `<clinic>|<clinician _id>` for every clinician of a clinic, members and
/// pending invites alike (the orphan rule counts both, as Tidepool's). Its name is new with that
/// rule (it was `members_by_clinic`, members only): a state directory written before rebuilds it.
pub const CLINICIANS_BY_CLINIC: &str = "clinicians_by_clinic";
/// Store: users deleted so far, with the time of deletion, so a document of theirs that arrives
/// late (its topic lagging the user events) goes as well.
pub const DELETED_USERS: &str = "deleted_users";
