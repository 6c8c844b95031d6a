//! The one fold of a change record into the document it is about: what the runtime's tables and
//! every processor that follows documents do with each change.

use bson::{Bson, Document};

use super::error::DecodeError;
use super::event::{CdcRecord, Operation};
use super::update::apply_update;

/// What a change record makes of the document it is about.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Nothing changes: an update without `fullDocument` of a document never seen here (it was
    /// deleted since, and its delete follows), or a record about no document.
    Keep,
    /// The document is now this, its `_id` included.
    Becomes(Document),
    /// The document was deleted.
    Gone,
}

impl CdcRecord {
    /// Whether the record is about one document. Collection-level change events (`drop`,
    /// `rename`, `dropDatabase`, `invalidate`, and the DDL events of `showExpandedEvents`) are
    /// not: they carry no document key, and the runtime counts and skips them.
    pub fn is_about_a_document(&self) -> bool {
        match self {
            Self::Tombstone { .. } => true,
            Self::Change(event) => !matches!(event.operation, Operation::Other(_)),
        }
    }

    /// The `_id` of the document the record is about.
    ///
    /// # Errors
    /// Poison: the key has no `_id` (also the case for a record about no document).
    pub fn document_id(&self) -> Result<&Bson, DecodeError> {
        let key = match self {
            Self::Tombstone { document_key } => document_key,
            Self::Change(event) => &event.document_key,
        };
        key.get("_id")
            .ok_or(DecodeError::Missing("documentKey._id"))
    }
}

/// Folds `record` into the document as last seen here. `stored` is asked for it only when the
/// record is an update without `fullDocument` (deleted before the connector's lookup, or a
/// producer without `updateLookup`): the update description is then applied to it path by path.
///
/// # Errors
/// Poison: no `_id` in the key, or an insert, replace or snapshot read without its document; and
/// what `stored` fails with.
pub fn next_document<E: From<DecodeError>>(
    record: CdcRecord,
    stored: impl FnOnce() -> Result<Option<Document>, E>,
) -> Result<Next, E> {
    let event = match record {
        CdcRecord::Tombstone { .. } => return Ok(Next::Gone),
        CdcRecord::Change(event) => event,
    };
    let mut document = match event.operation {
        Operation::Other(_) => return Ok(Next::Keep),
        Operation::Delete => return Ok(Next::Gone),
        Operation::Insert | Operation::Replace | Operation::Snapshot | Operation::Update => {
            match event.full_document {
                Some(document) => document,
                None if event.operation == Operation::Update => {
                    let Some(mut document) = stored()? else {
                        return Ok(Next::Keep);
                    };
                    apply_update(
                        &mut document,
                        &event.truncated_arrays,
                        &event.updated_fields,
                        &event.removed_fields,
                    );
                    document
                }
                None => return Err(DecodeError::Missing("fullDocument").into()),
            }
        }
    };
    let id = event
        .document_key
        .get("_id")
        .ok_or(DecodeError::Missing("documentKey._id"))?;
    // A producer that projects `_id` away still keys the event by it; the document keeps it.
    if !document.contains_key("_id") {
        document.insert("_id", id.clone());
    }
    Ok(Next::Becomes(document))
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;
    use crate::cdc::{ChangeEvent, SourcePosition, TruncatedArray};

    fn none() -> Result<Option<Document>, DecodeError> {
        Ok(None)
    }

    fn event(operation: Operation, full: Option<Document>) -> ChangeEvent {
        ChangeEvent {
            operation,
            namespace: None,
            document_key: doc! { "_id": 7 },
            full_document: full,
            updated_fields: doc! { "name": "B", "roles.1": "CLINIC_ADMIN" },
            removed_fields: vec!["note".into()],
            truncated_arrays: vec![TruncatedArray {
                field: "roles".into(),
                new_size: 1,
            }],
            source: SourcePosition::default(),
        }
    }

    #[test]
    fn a_change_with_its_document_becomes_that_document_with_its_id() {
        for operation in [
            Operation::Insert,
            Operation::Replace,
            Operation::Snapshot,
            Operation::Update,
        ] {
            let next = next_document(
                CdcRecord::Change(event(operation, Some(doc! { "name": "A" }))),
                || -> Result<_, DecodeError> { unreachable!("the document is in the event") },
            );
            assert_eq!(
                next.expect("folds"),
                Next::Becomes(doc! { "name": "A", "_id": 7 })
            );
        }
    }

    #[test]
    fn an_update_without_its_document_patches_the_stored_one_or_keeps_nothing() {
        let patched = next_document(CdcRecord::Change(event(Operation::Update, None)), || {
            Ok::<_, DecodeError>(Some(
                doc! { "_id": 7, "name": "A", "note": "n", "roles": ["CLINIC_MEMBER", "X"] },
            ))
        });
        assert_eq!(
            patched.expect("folds"),
            Next::Becomes(
                doc! { "_id": 7, "name": "B", "roles": ["CLINIC_MEMBER", "CLINIC_ADMIN"] }
            )
        );
        let unseen = next_document(CdcRecord::Change(event(Operation::Update, None)), none);
        assert_eq!(unseen.expect("folds"), Next::Keep);
    }

    #[test]
    fn deletes_and_tombstones_are_gone_and_collection_events_keep() {
        let delete = next_document(CdcRecord::Change(event(Operation::Delete, None)), none);
        assert_eq!(delete.expect("folds"), Next::Gone);
        let tombstone = CdcRecord::Tombstone {
            document_key: doc! { "_id": 7 },
        };
        assert!(tombstone.is_about_a_document());
        assert_eq!(next_document(tombstone, none).expect("folds"), Next::Gone);

        let mut drop = event(Operation::Other("drop".into()), None);
        drop.document_key = Document::new();
        let drop = CdcRecord::Change(drop);
        assert!(!drop.is_about_a_document());
        assert!(drop.document_id().is_err());
        assert_eq!(next_document(drop, none).expect("folds"), Next::Keep);
    }

    #[test]
    fn an_insert_without_its_document_or_a_change_without_an_id_is_poison() {
        let insert = next_document(CdcRecord::Change(event(Operation::Insert, None)), none);
        assert!(matches!(insert, Err(DecodeError::Missing("fullDocument"))));
        let mut keyless = event(Operation::Insert, Some(doc! {}));
        keyless.document_key = Document::new();
        let keyless = next_document(CdcRecord::Change(keyless), none);
        assert!(matches!(
            keyless,
            Err(DecodeError::Missing("documentKey._id"))
        ));
    }
}
