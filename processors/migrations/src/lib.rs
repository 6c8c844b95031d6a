//! The **migrations** processor (binary `clinic-migrations`, consumer group `clinic-migrations`, DLQ `migrations.dlq`).
//!
//! - Consumes: `clinic.migrations` (insert of a PENDING migration triggers), `gatekeeper.perms`, `clinic.patients` and `clinic.clinics` as tables.
//! - Does: moves every patient who shared data with a legacy clinician account into the clinic: PENDING → RUNNING → COMPLETED, idempotent, resumable.
//! - Produces: `sink.clinic.patients`, `sink.clinic.migrations`, `sink.gatekeeper.perms`, `notifications.requests`.
//!
//! Status: the crate and its binary exist so the workspace and CI have their final shape; the
//! processing itself is not built yet (the streams runtime, CDC codecs and operators' CLI it
//! builds on are in the `clinic` library now). Until then the binary refuses to start rather than
//! pretend.

/// This processor's name, as used in its consumer group, DLQ and changelog topic names.
pub const NAME: &str = "migrations";
