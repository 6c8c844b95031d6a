//! The collections of the `clinic` database and their indexes. Document shapes follow the
//! reference service (DESIGN.md 2.1), since the CDC topics carry them.
//!
//! FerretDB (the local stack) has neither transactions nor partial indexes; the code uses
//! neither (`docs/api.md`): multi-document changes are ordered so that a failure leaves nothing half-visible
//! (create the clinic, then its admin, removing the clinic if that fails; archive first, then
//! delete), and every unique index is a plain one.

use bson::{Bson, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};

/// What kind of document is archived before it is deleted.
#[derive(Debug, Clone, Copy)]
pub enum Archived {
    /// A patient record (`patient_deletions`, field `patient`).
    Patient,
    /// A clinician record (`clinician_deletions`, field `clinician`).
    Clinician,
}

/// The collections the API uses.
#[derive(Clone)]
pub struct Store {
    /// `clinics`.
    pub clinics: Collection<Document>,
    /// `clinicians` (members and invite placeholders).
    pub clinicians: Collection<Document>,
    /// `patients`, one document per (clinic, user).
    pub patients: Collection<Document>,
    /// `migrations`: one per legacy clinician account.
    pub migrations: Collection<Document>,
    /// `patient_invites`: a patient's invitation of a clinic, pending until accepted or declined.
    pub patient_invites: Collection<Document>,
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
            migrations: db.collection("migrations"),
            patient_invites: db.collection("patient_invites"),
            clinic_deletions: db.collection("clinic_deletions"),
            clinician_deletions: db.collection("clinician_deletions"),
            patient_deletions: db.collection("patient_deletions"),
            db,
        }
    }

    /// Archives `document` as the reference service does (`{deletedTime, deletedByUserId,
    /// <kind>: <document>}`), then deletes it; nothing is deleted when the archive fails (a crash
    /// in between leaves an archive too many, never a deletion without one).
    ///
    /// `Some(archive id)` when this call removed the document. `None` when it was gone already
    /// (a racing delete removed it): the archive is taken back, so every archive describes a
    /// deletion that happened. The deleted count decides, not `findAndModify`: FerretDB's is a
    /// find and a delete, so racing callers would all get the document back.
    ///
    /// # Errors
    /// Database failures (of the archive: nothing deleted).
    pub async fn archive_and_delete(
        &self,
        kind: Archived,
        document: &Document,
        by: &str,
    ) -> mongodb::error::Result<Option<Bson>> {
        let (archive, collection, field) = self.of(kind);
        let archived = archive
            .insert_one(doc! { "deletedTime": bson::DateTime::now(), "deletedByUserId": by, field: document })
            .await?
            .inserted_id;
        let id = document.get("_id").cloned().unwrap_or(Bson::Null);
        if collection
            .delete_one(doc! { "_id": id })
            .await?
            .deleted_count
            == 0
        {
            archive.delete_one(doc! { "_id": &archived }).await?;
            return Ok(None);
        }
        Ok(Some(archived))
    }

    /// Undoes an [`Store::archive_and_delete`] that returned `archived`: the document back, its
    /// archive gone. Only the call that removed the document can undo it, so nobody else has put
    /// it back meanwhile.
    ///
    /// # Errors
    /// Database failures.
    pub async fn restore(
        &self,
        kind: Archived,
        document: &Document,
        archived: &Bson,
    ) -> mongodb::error::Result<()> {
        let (archive, collection, _) = self.of(kind);
        collection.insert_one(document).await?;
        archive.delete_one(doc! { "_id": archived }).await?;
        Ok(())
    }

    /// The archive, the collection and the archive's field of `kind`.
    fn of(&self, kind: Archived) -> (&Collection<Document>, &Collection<Document>, &'static str) {
        match kind {
            Archived::Patient => (&self.patient_deletions, &self.patients, "patient"),
            Archived::Clinician => (&self.clinician_deletions, &self.clinicians, "clinician"),
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
        one_by_one(
            &self.clinics,
            [
                unique(doc! { "canonicalShareCode": 1 }, "UniqueCanonicalShareCode"),
                unique(doc! { "shareCodes": 1 }, "UniqueShareCodes"),
                plain(doc! { "createdTime": 1 }, "ClinicsByCreatedTime"),
            ],
        )
        .await?;
        // Members have a userId, invites an inviteId: each unique where present (partial on
        // MongoDB, as the reference; see `partial_unique`).
        self.partial_unique(&self.clinicians, "userId", "UniqueClinicianUserId")
            .await?;
        self.partial_unique(&self.clinicians, "inviteId", "UniqueInviteId")
            .await?;
        one_by_one(
            &self.clinicians,
            [
                // Every clinician document has an email (members and invites alike).
                unique(
                    doc! { "clinicId": 1, "email": 1 },
                    "UniqueClinicMemberEmail",
                ),
                plain(doc! { "userId": 1 }, "CliniciansByUserId"),
            ],
        )
        .await?;
        one_by_one(
            &self.patients,
            [
                unique(doc! { "clinicId": 1, "userId": 1 }, "UniquePatient"),
                plain(doc! { "userId": 1 }, "UserId"),
            ],
        )
        .await?;
        one_by_one(
            &self.migrations,
            [
                unique(doc! { "userId": 1 }, "UniqueClinicianMigration"),
                plain(doc! { "clinicId": 1 }, "MigrationsByClinic"),
            ],
        )
        .await?;
        // One pending invite per clinic and patient: `pendingFor` holds the patient's id while
        // the invite is pending and is removed when it is answered.
        self.partial_unique(&self.patient_invites, "pendingFor", "UniquePendingInvite")
            .await?;
        Ok(())
    }

    /// A unique index on `(clinicId, field)` for the documents that have `field`. MongoDB gets a
    /// partial index, as the reference has. A server that refuses `partialFilterExpression` gets
    /// a plain one, which on FerretDB's SQLite backend behaves the same: a missing field is NULL
    /// there and NULLs are distinct, so documents without the field never collide (on MongoDB
    /// a plain index would make them collide, hence partial first). The API tests check the
    /// behaviour on FerretDB: two invites in a clinic, and duplicates refused.
    async fn partial_unique(
        &self,
        collection: &Collection<Document>,
        field: &str,
        name: &str,
    ) -> mongodb::error::Result<()> {
        // Idempotent by name: a restart finds the index (partial or plain) and asks nothing.
        let existing = match collection.list_index_names().await {
            Ok(names) => names,
            // The collection does not exist yet (code 26, NamespaceNotFound): no indexes.
            Err(error) if matches!(error.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 26) => {
                Vec::new()
            }
            Err(error) => return Err(error),
        };
        if existing.iter().any(|n| n == name) {
            return Ok(());
        }
        let keys = doc! { "clinicId": 1, field: 1 };
        let partial = IndexModel::builder()
            .keys(keys.clone())
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .name(name.to_owned())
                    .partial_filter_expression(doc! { field: { "$exists": true } })
                    .build(),
            )
            .build();
        match collection.create_index(partial).await {
            Ok(_) => Ok(()),
            Err(error) => {
                let reason = match error.kind.as_ref() {
                    mongodb::error::ErrorKind::Command(command) => command.message.clone(),
                    _ => error.to_string(),
                };
                tracing::info!(index = name, reason = %reason, "No partial index here; a plain unique index instead (FerretDB).");
                let plain = IndexModel::builder()
                    .keys(keys)
                    .options(
                        IndexOptions::builder()
                            .unique(true)
                            .name(name.to_owned())
                            .build(),
                    )
                    .build();
                collection.create_index(plain).await.map(|_| ())
            }
        }
    }
}

/// Creates indexes one request each: FerretDB 1.24 drops the connection (a panic) when a
/// `createIndexes` with several indexes finds them all existing, which every restart does.
async fn one_by_one<const N: usize>(
    collection: &Collection<Document>,
    indexes: [IndexModel; N],
) -> mongodb::error::Result<()> {
    for index in indexes {
        collection.create_index(index).await?;
    }
    Ok(())
}

/// One conditional rewrite of the list `field` of `document`, as just read from `collection`:
/// `edit` changes the list, which is written (with `updatedTime` when `touch`) only if the
/// stored one is still the one read; FerretDB has neither transactions nor positional updates.
/// `Some` (what `edit` answered, and the list as it now stands) when written or left unchanged;
/// `None` when the list changed meanwhile: read the document again and retry.
///
/// # Errors
/// `edit`'s; database failures.
pub async fn rewrite_list<T>(
    collection: &Collection<Document>,
    document: &Document,
    field: &str,
    touch: bool,
    edit: impl FnOnce(&mut Vec<Document>) -> crate::api::error::ApiResult<T>,
) -> crate::api::error::ApiResult<Option<(T, Vec<Document>)>> {
    let before: Vec<Document> = document
        .get_array(field)
        .map(|items| {
            items
                .iter()
                .filter_map(Bson::as_document)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut after = before.clone();
    let answer = edit(&mut after)?;
    if after == before {
        return Ok(Some((answer, after)));
    }
    let id = document.get("_id").cloned().unwrap_or(Bson::Null);
    let unchanged = match document.get(field) {
        Some(stored) => doc! { "_id": id, field: stored.clone() },
        None => doc! { "_id": id, field: { "$exists": false } },
    };
    let mut set = doc! { field: &after };
    if touch {
        set.insert("updatedTime", bson::DateTime::now());
    }
    let written = collection
        .update_one(unchanged, doc! { "$set": set })
        .await?;
    Ok((written.matched_count == 1).then_some((answer, after)))
}

/// Quotes regular-expression metacharacters, so a search is a literal substring.
pub fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
