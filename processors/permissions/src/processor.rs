//! The pure logic: change events in, gatekeeper records out, emitting only when the projection
//! changes. No I/O.

use bson::{Bson, Document};
use clinic::cdc::{self, CdcRecord, ChangeEvent, Operation};
use clinic::streams::store::table_key;
use clinic::streams::{
    Context, Input, InputFormat, OutValue, OutputRecord, Payload, ProcessError, Processor, Topology,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::Inputs;
use crate::model::{Membership, PatientGrant};

/// Input topics.
pub const PATIENTS: &str = "clinic.patients";
/// Input topic.
pub const CLINICIANS: &str = "clinic.clinicians";
/// Output topic.
pub const PATIENT_PERMISSIONS: &str = "sink.gatekeeper.patient_permissions";
/// Output topic.
pub const CLINICIAN_PERMISSIONS: &str = "sink.gatekeeper.clinician_permissions";
/// Store of what was last emitted per patient document.
pub const PATIENT_STORE: &str = "patients";
/// Store of what was last emitted per clinician document.
pub const CLINICIAN_STORE: &str = "clinicians";

/// The permissions processor.
pub struct Permissions {
    inputs: Inputs,
}

impl Permissions {
    /// A processor reading its inputs in the given formats.
    pub fn new(inputs: Inputs) -> Self {
        Self { inputs }
    }
}

/// A projection the processor keeps and emits.
trait Projection: Serialize + DeserializeOwned + PartialEq + Sized {
    fn of(document: &Document) -> Result<Option<Self>, ProcessError>;
    fn to_document(&self) -> Document;
}

impl Projection for PatientGrant {
    fn of(document: &Document) -> Result<Option<Self>, ProcessError> {
        PatientGrant::of(document)
    }
    fn to_document(&self) -> Document {
        PatientGrant::to_document(self)
    }
}

impl Projection for Membership {
    fn of(document: &Document) -> Result<Option<Self>, ProcessError> {
        Membership::of(document)
    }
    fn to_document(&self) -> Document {
        Membership::to_document(self)
    }
}

impl Processor for Permissions {
    fn topology(&self) -> Topology {
        Topology::new(crate::NAME)
            .stream(PATIENTS, InputFormat::Cdc(self.inputs.patients))
            .stream(CLINICIANS, InputFormat::Cdc(self.inputs.clinicians))
            .store(PATIENT_STORE)
            .store(CLINICIAN_STORE)
            .output(PATIENT_PERMISSIONS)
            .output(CLINICIAN_PERMISSIONS)
    }

    fn process(&mut self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let Payload::Cdc(record) = input.payload else {
            return Err(ProcessError::Fatal(
                "BUG: inputs are declared as CDC".into(),
            ));
        };
        match input.topic {
            PATIENTS => follow::<PatientGrant>(ctx, record, PATIENT_STORE, PATIENT_PERMISSIONS),
            CLINICIANS => follow::<Membership>(ctx, record, CLINICIAN_STORE, CLINICIAN_PERMISSIONS),
            other => Err(ProcessError::Fatal(format!(
                "BUG: unexpected input {other}"
            ))),
        }
    }
}

/// Keeps `store` and `topic` in step with one document's projection. Rows are canonical Extended
/// JSON (the sinks read them with StringConverter), so `_id` and `clinicId` keep their BSON types.
fn follow<P: Projection>(
    ctx: &mut Context<'_>,
    record: CdcRecord,
    store: &str,
    topic: &str,
) -> Result<(), ProcessError> {
    let (document_key, event) = match record {
        CdcRecord::Tombstone { document_key } => (document_key, None),
        CdcRecord::Change(event) => (event.document_key.clone(), Some(event)),
    };
    let id = document_key
        .get("_id")
        .ok_or_else(|| ProcessError::Poison("change without a document _id".into()))?;
    let key = table_key(id);
    let stored: Option<P> = ctx.get_json(store, &key)?;
    let next = match event {
        None => None,
        Some(event) => match projected(&event, stored.as_ref())? {
            Next::Keep => return Ok(()),
            Next::Becomes(next) => next,
        },
    };
    let output_key = sink_key(id);
    match (next, stored) {
        (None, None) => Ok(()),
        (None, Some(_)) => {
            ctx.delete(store, &key)?;
            ctx.emit(OutputRecord {
                topic: topic.to_owned(),
                key: output_key,
                value: None,
            })
        }
        (Some(next), Some(stored)) if next == stored => Ok(()),
        (Some(next), _) => {
            ctx.put_json(store, &key, &next)?;
            let value = OutValue::Json(Bson::Document(next.to_document()).into_canonical_extjson());
            ctx.emit(OutputRecord {
                topic: topic.to_owned(),
                key: output_key,
                value: Some(value),
            })
        }
    }
}

enum Next<P> {
    /// The event says nothing about the projection.
    Keep,
    /// The projection after the event (`None`: the document grants nothing now).
    Becomes(Option<P>),
}

fn projected<P: Projection>(
    event: &ChangeEvent,
    stored: Option<&P>,
) -> Result<Next<P>, ProcessError> {
    match event.operation {
        Operation::Delete => Ok(Next::Becomes(None)),
        Operation::Other(_) => Ok(Next::Keep),
        Operation::Insert | Operation::Replace | Operation::Snapshot | Operation::Update => {
            match &event.full_document {
                Some(document) => P::of(document).map(Next::Becomes),
                // Deleted before the lookup (or a producer without updateLookup): apply the update to
                // what we projected; nothing to apply it to means nothing was granted before either,
                // and a delete event will follow.
                None if event.operation == Operation::Update => match stored {
                    None => Ok(Next::Keep),
                    Some(stored) => {
                        let mut document = stored.to_document();
                        cdc::apply_update(
                            &mut document,
                            &event.updated_fields,
                            &event.removed_fields,
                        );
                        P::of(&document).map(Next::Becomes)
                    }
                },
                None => Err(ProcessError::Poison(format!(
                    "{} event without fullDocument",
                    event.operation.as_str()
                ))),
            }
        }
    }
}

/// The sink key (shared by every processor that writes a sink topic).
pub use clinic::streams::sink_key;
