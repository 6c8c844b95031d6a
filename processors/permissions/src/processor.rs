//! The pure logic: change events in, gatekeeper records out, emitting only when the projection
//! changes. No I/O.

use clinic::cdc::{self, CdcRecord, Next};
use clinic::streams::projection::Kept;
use clinic::streams::store::table_key;
use clinic::streams::{
    Context, Input, InputFormat, OutputRecord, Payload, ProcessError, Processor, Topology,
    sink_document,
};

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
/// What the patient projection reads of a patient document ([`Kept::of`] of [`PatientGrant`]); the decoder
/// skips the rest of `fullDocument`.
const PATIENT_FIELDS: &[&str] = &["userId", "clinicId", "permissions"];
/// What the membership projection reads of a clinician document ([`Kept::of`] of [`Membership`]).
const CLINICIAN_FIELDS: &[&str] = &["userId", "clinicId", "roles"];
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

    /// What the binary runs: a factory of processors configured by `settings`.
    pub fn factory(settings: &crate::config::Settings) -> impl Fn() -> Self + Send + use<> {
        let inputs = settings.inputs;
        move || Self::new(inputs)
    }
}

impl Processor for Permissions {
    fn topology(&self) -> Topology {
        Topology::new(crate::NAME)
            .stream(PATIENTS, InputFormat::Cdc(self.inputs.patients))
            .stream(CLINICIANS, InputFormat::Cdc(self.inputs.clinicians))
            .document_fields(PATIENTS, PATIENT_FIELDS)
            .document_fields(CLINICIANS, CLINICIAN_FIELDS)
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
/// JSON ([`sink_document`]; the sinks read them with StringConverter), so `_id` and `clinicId`
/// keep their BSON types.
fn follow<P: Kept>(
    ctx: &mut Context<'_>,
    record: CdcRecord,
    store: &str,
    topic: &str,
) -> Result<(), ProcessError> {
    let id = record.document_id()?.clone();
    let key = table_key(&id);
    let stored: Option<P> = ctx.get_json(store, &key)?;
    let next = match cdc::next_document(record, || {
        Ok::<_, ProcessError>(stored.as_ref().map(P::to_document))
    })? {
        Next::Keep => return Ok(()),
        Next::Gone => None,
        Next::Becomes(document) => P::of(&document)?,
    };
    match (next, stored) {
        (None, None) => Ok(()),
        (None, Some(_)) => {
            ctx.delete(store, &key)?;
            ctx.emit(OutputRecord {
                topic: topic.to_owned(),
                key: sink_key(&id),
                value: None,
            })
        }
        (Some(next), Some(stored)) if next == stored => Ok(()),
        (Some(next), _) => {
            ctx.put_json(store, &key, &next)?;
            ctx.emit(sink_document(topic, &id, &next.to_document()))
        }
    }
}

/// The sink key (shared by every processor that writes a sink topic).
pub use clinic::streams::sink_key;
