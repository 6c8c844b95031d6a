//! Re-keying a CDC table's changes through a repartition topic ([`super::Topology::repartition`]):
//! the CDC topics are keyed by document id, while a lookup needs the documents of one clinic or
//! one user in one task. Each change goes on keyed by what its document says (its clinic, its
//! user), in the MongoDB connector's JSON envelope with canonical Extended JSON documents (BSON
//! types kept), to be read back as [`REPARTITIONED`] and folded by the task that holds the key.
//!
//! A delete, or an update without its document, says nothing of the key: where each document
//! went last is kept in a store (one entry per document, in the routing task, which the CDC
//! topic's partitioning makes the one that sees all of its changes). A document whose key
//! changes (a patient moved to another clinic) leaves the old key a delete.

use bson::{Bson, Document};

use super::processor::{Context, OutValue, OutputRecord, ProcessError};
use super::store::table_key;
use crate::cdc::extjson::Dialect;
use crate::cdc::{self, CdcRecord, ChangeEvent, Encoding, Envelope, Format, Operation};

/// How repartition topics carry changes: the MongoDB connector's JSON envelope, documents in
/// canonical Extended JSON.
pub const REPARTITIONED: Format = Format {
    envelope: Envelope::MongoChangeStream,
    encoding: Encoding::Json,
};

/// Where one table's changes go.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    /// The store that remembers each document's key (`<prefix><document table key>` → key).
    pub routes: &'a str,
    /// This table's prefix in that store (one store may serve several tables).
    pub prefix: &'a str,
    /// The repartition topic.
    pub topic: &'a str,
}

impl Route<'_> {
    /// Sends `record` on keyed by `key_of(document id, document)`; a delete, or an update without its
    /// document, to where the document went last (nowhere when it went nowhere yet).
    ///
    /// # Errors
    /// Whatever `key_of` says of a document (poison for one that cannot be routed), and the
    /// store's errors.
    pub fn forward(
        self,
        ctx: &mut Context<'_>,
        record: CdcRecord,
        key_of: impl Fn(&Bson, &Document) -> Result<String, ProcessError>,
    ) -> Result<(), ProcessError> {
        let id = record.document_id()?.clone();
        let route_key = format!("{}{}", self.prefix, table_key(&id));
        let known = ctx.get_json::<String>(self.routes, &route_key)?;
        let event = match record {
            CdcRecord::Change(event) if matches!(event.operation, Operation::Other(_)) => {
                return Ok(());
            }
            CdcRecord::Change(event) if event.operation != Operation::Delete => event,
            // Gone: a delete, or a Debezium tombstone.
            _ => {
                if let Some(to) = known {
                    self.send(ctx, &to, &deleted(id))?;
                    ctx.delete(self.routes, &route_key)?;
                }
                return Ok(());
            }
        };
        let to = match &event.full_document {
            Some(document) => key_of(&id, document)?,
            None => match &known {
                Some(to) => to.clone(),
                None => return Ok(()),
            },
        };
        if let Some(from) = known.as_ref().filter(|from| **from != to) {
            self.send(ctx, from, &deleted(id))?;
        }
        if known.as_ref() != Some(&to) {
            ctx.put_json(self.routes, &route_key, &to)?;
        }
        self.send(ctx, &to, &event)
    }

    /// Writes `event` to the repartition topic keyed by `to`.
    fn send(
        self,
        ctx: &mut Context<'_>,
        to: &str,
        event: &ChangeEvent,
    ) -> Result<(), ProcessError> {
        ctx.emit(OutputRecord {
            topic: self.topic.to_owned(),
            key: to.to_owned(),
            value: Some(changed(event)),
        })
    }
}

/// Sends `record` to every partition of the repartition topic `topic` (keyed by the document): a
/// small table every task keeps whole, read in step with the task's other inputs (unlike a
/// global table, which the gate of `after_others` inputs does not wait for).
///
/// # Errors
/// Fatal when `topic` is not a declared repartition topic.
pub fn everywhere(
    ctx: &mut Context<'_>,
    topic: &str,
    record: CdcRecord,
) -> Result<(), ProcessError> {
    let id = record.document_id()?.clone();
    let event = match record {
        CdcRecord::Change(event) if matches!(event.operation, Operation::Other(_)) => {
            return Ok(());
        }
        CdcRecord::Change(event) => event,
        CdcRecord::Tombstone { .. } => deleted(id.clone()),
    };
    ctx.broadcast(OutputRecord {
        topic: topic.to_owned(),
        key: table_key(&id),
        value: Some(changed(&event)),
    })
}

/// A change as a repartition topic carries it ([`REPARTITIONED`]).
pub fn changed(event: &ChangeEvent) -> OutValue {
    OutValue::Json(cdc::mongo::to_json(event, Dialect::Canonical))
}

/// A delete of the document `id`.
fn deleted(id: Bson) -> ChangeEvent {
    ChangeEvent {
        operation: Operation::Delete,
        namespace: None,
        document_key: bson::doc! { "_id": id },
        full_document: None,
        updated_fields: Document::new(),
        removed_fields: Vec::new(),
        truncated_arrays: Vec::new(),
        source: cdc::SourcePosition::default(),
    }
}
