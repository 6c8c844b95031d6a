//! The topics and stores the processor names: its settings check them, its logic uses them.

/// The trigger: the insert of a PENDING migration.
pub const MIGRATIONS: &str = "clinic.migrations";
/// The legacy shares.
pub const PERMS: &str = "gatekeeper.perms";
/// The clinics' patients.
pub const PATIENTS: &str = "clinic.patients";
/// Clinic names.
pub const CLINICS: &str = "clinic.clinics";
/// Users' addresses (CloudEvents).
pub const USER_EVENTS: &str = "user.events";
/// Migrated patient documents.
pub const SINK_PATIENTS: &str = "sink.clinic.patients";
/// Migration statuses.
pub const SINK_MIGRATIONS: &str = "sink.clinic.migrations";
/// Tombstones of moved legacy shares.
pub const SINK_PERMS: &str = "sink.gatekeeper.perms";

/// Inputs whose names are fixed (the profile topic is configured).
pub const FIXED_INPUTS: [&str; 5] = [MIGRATIONS, PERMS, PATIENTS, CLINICS, USER_EVENTS];

// Repartition topics (`migrations.<name>.repartition` in Kafka). A migration passes through
// three keys in turn: the legacy clinician's (their shares, their migration), each patient's
// (their profile and address), the clinic's (its patients and MRNs); the tables are routed to
// the same keys.

/// Repartition topic: PENDING migration inserts, keyed by the legacy clinician.
pub const TRIGGERS: &str = "migrations-by-user";
/// Repartition topic: share changes, keyed by the grantee.
pub const SHARE_CHANGES: &str = "shares-by-grantee";
/// Repartition topic: profile changes, keyed by the profile's user.
pub const PROFILE_CHANGES: &str = "profiles-by-user";
/// Repartition topic: address changes from the user events (`{user, email}`), keyed by user.
pub const ADDRESS_CHANGES: &str = "addresses-by-user";
/// Repartition topic: the clinics' patients' changes, keyed by clinic.
pub const PATIENT_CHANGES: &str = "patients-by-clinic";
/// Repartition topic: clinic changes, to every partition (each task keeps every clinic).
pub const CLINIC_CHANGES: &str = "clinics-everywhere";
/// Repartition topic: one record per further step of a running migration, keyed by the legacy
/// clinician.
pub const STEPS: &str = "steps";
/// Repartition topic: a share to move, keyed by its sharer (who gets their profile added).
pub const MOVES: &str = "moves-by-patient";
/// Repartition topic: a share to move with its sharer's profile, keyed by the clinic (which
/// writes the patient).
pub const PLACEMENTS: &str = "moves-by-clinic";
/// Repartition topic: a share moved, keyed by the legacy clinician (whose migration counts it).
pub const MOVED: &str = "moved-by-clinician";

/// Store: shares (`d/<row key>` → [`crate::model::Share`], `i/<grantee>|<row key>` → row key).
pub const SHARES: &str = "shares";
/// Store: patients (`d/<document key>` → [`crate::model::PatientRef`], `i/<clinic>|<user>|` → document key).
pub const PATIENT_STORE: &str = "patients";
/// Store: clinics (`d/<document key>` → [`crate::model::Clinic`]).
pub const CLINIC_STORE: &str = "clinics";
/// Store: profiles (`d/<document key>` → [`crate::model::Profile`], `i/<user>|` → document key).
pub const PROFILE_STORE: &str = "profiles";
/// Store: addresses (`<user>|` → [`clinic::streams::projection::Address`]).
pub const USERS: &str = "users";
/// Store: where each share, profile and patient document was routed (`s/`, `f/`, `p/` + its
/// table key → the repartition key).
pub const ROUTES: &str = "routes";
/// Store: migrations (`m/<document key>` → [`crate::model::Migration`], `r/<legacy user>|` → the key of
/// their running migration).
pub const MIGRATION_STORE: &str = "migrations";
