//! The collections of the `clinic` database and their indexes. Document shapes follow the
//! reference service (DESIGN.md 2.1), since the CDC topics carry them.
//!
//! FerretDB (the local stack) has neither transactions nor partial indexes; the code uses
//! neither: multi-document changes are ordered so that a failure leaves nothing half-visible
//! (create the clinic, then its admin, removing the clinic if that fails; archive first, then
//! delete), and every unique index is a plain one.

use bson::{Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};

/// The collections the API uses.
#[derive(Clone)]
pub struct Store {
    /// `clinics`.
    pub clinics: Collection<Document>,
    /// `clinicians` (members and invite placeholders).
    pub clinicians: Collection<Document>,
    /// `patients`, one document per (clinic, user).
    pub patients: Collection<Document>,
    /// `clinic_deletions`: archives `{deletedTime, deletedByUserId, clinic}`.
    pub clinic_deletions: Collection<Document>,
    /// `clinician_deletions`: archives `{deletedTime, deletedByUserId, clinician}`.
    pub clinician_deletions: Collection<Document>,
    /// `patient_deletions`: archives `{deletedTime, deletedByUserId, patient}`.
    pub patient_deletions: Collection<Document>,
    /// The database, for the readiness ping.
    pub db: Database,
}

impl Store {
    /// The collections of `db`.
    pub fn new(db: Database) -> Self {
        Self {
            clinics: db.collection("clinics"),
            clinicians: db.collection("clinicians"),
            patients: db.collection("patients"),
            clinic_deletions: db.collection("clinic_deletions"),
            clinician_deletions: db.collection("clinician_deletions"),
            patient_deletions: db.collection("patient_deletions"),
            db,
        }
    }

    /// Creates the indexes the invariants rest on (idempotent).
    ///
    /// # Errors
    /// The database refusing an index.
    pub async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        let unique = |keys: Document, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .unique(true)
                        .name(name.to_owned())
                        .build(),
                )
                .build()
        };
        let plain = |keys: Document, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_owned()).build())
                .build()
        };
        self.clinics
            .create_indexes([
                unique(doc! { "canonicalShareCode": 1 }, "UniqueCanonicalShareCode"),
                unique(doc! { "shareCodes": 1 }, "UniqueShareCodes"),
                plain(doc! { "createdTime": 1 }, "ClinicsByCreatedTime"),
            ])
            .await?;
        self.clinicians
            .create_indexes([
                unique(doc! { "clinicId": 1, "userId": 1 }, "UniqueClinicianUserId"),
                plain(doc! { "userId": 1 }, "CliniciansByUserId"),
            ])
            .await?;
        self.patients
            .create_indexes([
                unique(doc! { "clinicId": 1, "userId": 1 }, "UniquePatient"),
                plain(doc! { "userId": 1 }, "UserId"),
            ])
            .await?;
        Ok(())
    }
}
