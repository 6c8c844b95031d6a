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
/// The processor's own work queue: one record per further step of a running migration.
pub const STEPS: &str = "migrations.steps";
/// Migrated patient documents.
pub const SINK_PATIENTS: &str = "sink.clinic.patients";
/// Migration statuses.
pub const SINK_MIGRATIONS: &str = "sink.clinic.migrations";
/// Tombstones of moved legacy shares.
pub const SINK_PERMS: &str = "sink.gatekeeper.perms";

/// Inputs whose names are fixed (the profile topic is configured).
pub const FIXED_INPUTS: [&str; 6] = [MIGRATIONS, PERMS, PATIENTS, CLINICS, USER_EVENTS, STEPS];

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
/// Store: migrations (`m/<document key>` → [`crate::model::Migration`], `r/<legacy user>|` → the key of
/// their running migration).
pub const MIGRATION_STORE: &str = "migrations";
