//! The **permissions** processor (binary `clinic-permissions`, consumer group
//! `clinic-permissions`, DLQ `permissions.dlq`).
//!
//! - Consumes: `clinic.patients`, `clinic.clinicians` (any CDC form, per [`config::Inputs`]).
//! - Produces: `sink.gatekeeper.patient_permissions` — per patient document with a user and at
//!   least one permission, `{userId, clinicId, permissions}` with each granted key an empty
//!   document; `sink.gatekeeper.clinician_permissions` — per clinician document with a user,
//!   `{userId, clinicId, roles}`. Values are canonical Extended JSON, so `clinicId` stays an
//!   ObjectId as in Tidepool's own gatekeeper rows (gatekeeper joins the two collections on it).
//!   Keys are `{"_id": <document id>}`; a tombstone when the document is deleted, loses its last
//!   permission, or (clinician) its user.
//! - Emits only when the projection changes (a summary refresh or a name edit emits nothing),
//!   using the stores `patients` / `clinicians` of what it last emitted. An update without
//!   `fullDocument` is applied, dotted paths and all, to the stored projection.
//! - Guarantees: those of the streams runner (exactly-once by default); a malformed record goes
//!   to the DLQ and the partition continues.
//! - Settings: [`config::Settings`].

pub mod config;
pub mod model;
pub mod processor;

/// This processor's name, as used in its consumer group, DLQ and changelog topic names.
pub const NAME: &str = "permissions";

/// The binary: the processor on the shared main ([`clinic::streams::app`]).
pub fn app() -> clinic::streams::app::App<config::Settings> {
    clinic::streams::app::App::processor(
        "clinic-permissions",
        "The clinic suite's gatekeeper permissions, projected from patients and clinicians",
        processor::Permissions::factory,
    )
}
