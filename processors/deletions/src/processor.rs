//! The pure logic, in two steps joined by repartition topics. Each task first routes what its
//! input partitions bring: a patient's or clinician's change goes on, re-keyed by the document's
//! clinic, to the task that holds that clinic; a user's deletion or address change goes to every
//! task. Each task then keeps the documents of its clinics indexed by user and by clinic; on a
//! user's deletion it archives and tombstones every document of theirs it holds, then the
//! non-custodial patients of any of its clinics left without a member. No I/O.

use bson::{Bson, Document};
use clinic::cdc::{self, CdcRecord, Encoding, Next};
use clinic::documents;
use clinic::streams::projection::part;
use clinic::streams::reroute::{REPARTITIONED, Route};
use clinic::streams::store::table_key;
use clinic::streams::stored::{StoredError, compact_key, document_fields, expand_key};
use clinic::streams::{
    Context, Input, InputFormat, OutValue, OutputRecord, Payload, ProcessError, Processor,
    Topology, sink_document,
};
use serde::{Deserialize, Serialize};

use crate::config::Inputs;
use crate::model::{self, Kind, UserEvent};

pub use crate::names::*;

/// The deletions processor.
pub struct Deletions {
    inputs: Inputs,
}

impl Deletions {
    /// A processor reading its inputs as `inputs` says.
    pub fn new(inputs: Inputs) -> Self {
        Self { inputs }
    }

    /// What the binary runs: a factory of processors configured by `settings`.
    pub fn factory(settings: &crate::config::Settings) -> impl Fn() -> Self + Send + use<> {
        let inputs = settings.inputs.clone();
        move || Self::new(inputs.clone())
    }
}

/// What `deleted_users` holds per user.
#[derive(Debug, Serialize, Deserialize)]
struct Deleted {
    at_ms: i64,
}

impl Processor for Deletions {
    fn topology(&self) -> Topology {
        let mut topology = Topology::new(crate::NAME)
            .stream(PATIENTS, InputFormat::Cdc(self.inputs.patients))
            .stream(CLINICIANS, InputFormat::Cdc(self.inputs.clinicians));
        if self.inputs.user_events {
            topology = topology.stream_after_others(USER_EVENTS, InputFormat::Json);
        }
        if let Some(table) = &self.inputs.user_table {
            let format = match table.encoding {
                Encoding::Avro => InputFormat::Avro,
                Encoding::Json => InputFormat::Json,
            };
            topology = topology.stream_after_others(table.topic.clone(), format);
        }
        topology
            .repartition(PATIENT_CHANGES)
            .repartition(CLINICIAN_CHANGES)
            .repartition(USER_CHANGES)
            .stream(PATIENT_CHANGES, InputFormat::Cdc(REPARTITIONED))
            .stream(CLINICIAN_CHANGES, InputFormat::Cdc(REPARTITIONED))
            // A user's records are acted on once the clinic's documents routed before have been
            // read (and the CDC topics up to where they ended when the user event arrived).
            .stream_after_others(USER_CHANGES, InputFormat::Json)
            .store(ROUTES)
            .persistent(ROUTES)
            .store(PATIENT_STORE)
            .store(CLINICIAN_STORE)
            .store(DELETED_USERS)
            // Every patient and clinician document: on disk when the instance has a state
            // directory (the chart gives it a volume), with their indexes.
            .persistent(PATIENT_STORE)
            .persistent(CLINICIAN_STORE)
            .index(PATIENTS_BY_USER, PATIENT_STORE, by_user)
            .index(PATIENTS_BY_CLINIC, PATIENT_STORE, patients_by_clinic)
            .index(CLINICIANS_BY_USER, CLINICIAN_STORE, by_user)
            .index(CLINICIANS_BY_CLINIC, CLINICIAN_STORE, clinicians_by_clinic)
            .output(SINK_PATIENTS)
            .output(SINK_CLINICIANS)
            .output(SINK_CLINICS)
            .output(PATIENT_DELETIONS)
            .output(CLINICIAN_DELETIONS)
    }

    fn process(&mut self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let event = match (input.topic, input.payload) {
            (PATIENTS, Payload::Cdc(record)) => return route(ctx, Kind::Patient, record),
            (CLINICIANS, Payload::Cdc(record)) => return route(ctx, Kind::Clinician, record),
            (PATIENT_CHANGES, Payload::Cdc(record)) => return follow(ctx, Kind::Patient, record),
            (CLINICIAN_CHANGES, Payload::Cdc(record)) => {
                return follow(ctx, Kind::Clinician, record);
            }
            (USER_CHANGES, Payload::Json(value)) => {
                let event = value
                    .map(serde_json::from_value::<UserEvent>)
                    .transpose()
                    .map_err(|e| ProcessError::Fatal(format!("BUG: a routed user event: {e}")))?
                    .ok_or_else(|| {
                        ProcessError::Fatal("BUG: a routed user event without value".into())
                    })?;
                return act(ctx, event);
            }
            (USER_EVENTS, Payload::Json(value)) => {
                model::cloud_event(input.headers, value.as_ref(), input.timestamp_ms)?
            }
            (topic, payload) => {
                let table = self
                    .inputs
                    .user_table
                    .as_ref()
                    .filter(|t| t.topic == topic)
                    .ok_or_else(|| ProcessError::Fatal(format!("BUG: unexpected input {topic}")))?;
                let value = match payload {
                    Payload::Json(value) => value,
                    Payload::Avro(value) => value
                        .map(serde_json::Value::try_from)
                        .transpose()
                        .map_err(|e| ProcessError::Poison(format!("Avro value as JSON: {e}")))?,
                    Payload::Cdc(_) => {
                        return Err(ProcessError::Fatal(
                            "BUG: the user table is declared as JSON or Avro".into(),
                        ));
                    }
                };
                let key = input.key.and_then(|k| cdc::parse_json_text(k).ok());
                model::debezium_row(
                    key.as_ref(),
                    value.as_ref(),
                    &table.id_column,
                    input.timestamp_ms,
                )?
            }
        };
        if let UserEvent::Ignored { kind } = &event {
            ::metrics::counter!(crate::metrics::IGNORED).increment(1);
            tracing::debug!(kind = %kind, topic = input.topic, "Ignored a user event.");
            return Ok(());
        }
        // To every task: each holds the user's records in its own clinics.
        let value = serde_json::to_value(&event)
            .map_err(|e| ProcessError::Fatal(format!("BUG: a user event as JSON: {e}")))?;
        ctx.broadcast(OutputRecord {
            topic: USER_CHANGES.to_owned(),
            key: String::new(),
            value: Some(OutValue::Json(value)),
        })
    }
}

/// What a user event routed to this task does to the records it holds.
fn act(ctx: &mut Context<'_>, event: UserEvent) -> Result<(), ProcessError> {
    match event {
        UserEvent::Deleted { user_id, at_ms } => delete_user(ctx, &user_id, at_ms),
        UserEvent::EmailChanged {
            user_id,
            email,
            at_ms,
        } => change_email(ctx, &user_id, &email, at_ms),
        UserEvent::Ignored { .. } => Ok(()),
    }
}

/// Sends a document's change on to the task of its clinic (the repartition key: the clinic's
/// table key, or the document's own for a document without a clinic).
fn route(ctx: &mut Context<'_>, kind: Kind, record: CdcRecord) -> Result<(), ProcessError> {
    let (prefix, topic) = match kind {
        Kind::Patient => ("p/", PATIENT_CHANGES),
        Kind::Clinician => ("c/", CLINICIAN_CHANGES),
    };
    let route = Route {
        routes: ROUTES,
        prefix,
        topic,
    };
    route.forward(ctx, record, |id, document| {
        Ok(model::clinic_key(document).unwrap_or_else(|| table_key(id)))
    })
}

impl Kind {
    fn store(self) -> &'static str {
        match self {
            Kind::Patient => PATIENT_STORE,
            Kind::Clinician => CLINICIAN_STORE,
        }
    }
    fn sink(self) -> &'static str {
        match self {
            Kind::Patient => SINK_PATIENTS,
            Kind::Clinician => SINK_CLINICIANS,
        }
    }
    fn archive_topic(self) -> &'static str {
        match self {
            Kind::Patient => PATIENT_DELETIONS,
            Kind::Clinician => CLINICIAN_DELETIONS,
        }
    }
}

/// The index-key prefix of a clinic: its table key, compacted (a table key is JSON text, which,
/// like a user's quoted [`part`], never starts another's keys).
fn clinic_prefix(clinic: &str) -> String {
    format!("{}|", compact_key(clinic))
}

/// The index key of the document `key` under `prefix`, when it has one; the document's key is
/// compacted too (indexes live in memory only).
fn listed_under(prefix: Option<String>, key: &str) -> Vec<String> {
    prefix
        .map(|prefix| format!("{prefix}{}", compact_key(key)))
        .into_iter()
        .collect()
}

// The indexes, kept by the runtime ([`Topology::index`]) from the fields read in place.

/// A document's index key under its user (`<user>|<document key>`), when it has one.
fn by_user(key: &str, value: &[u8]) -> Result<Vec<String>, StoredError> {
    let fields = document_fields(key, value, &["userId"])?;
    let user = documents::user_id(&fields);
    Ok(listed_under(user.as_deref().map(part), key))
}

/// A patient's index key under its clinic, whatever its user.
fn patients_by_clinic(key: &str, value: &[u8]) -> Result<Vec<String>, StoredError> {
    let fields = document_fields(key, value, &["clinicId"])?;
    let clinic = model::clinic_key(&fields);
    Ok(listed_under(clinic.as_deref().map(clinic_prefix), key))
}

/// A clinician's index key under its clinic, a member or a pending invite.
fn clinicians_by_clinic(key: &str, value: &[u8]) -> Result<Vec<String>, StoredError> {
    let fields = document_fields(key, value, &["clinicId"])?;
    let clinic = model::clinic_key(&fields);
    Ok(listed_under(clinic.as_deref().map(clinic_prefix), key))
}

/// Keeps the table of `kind` in step with one change; a document of an already deleted user is
/// removed at once.
fn follow(ctx: &mut Context<'_>, kind: Kind, record: CdcRecord) -> Result<(), ProcessError> {
    let key = table_key(record.document_id()?);
    let stored = ctx.get_document(kind.store(), &key)?;
    let next = match cdc::next_document(record, || Ok::<_, ProcessError>(stored.clone()))? {
        Next::Keep => return Ok(()),
        Next::Gone => None,
        // Holds the document's `_id`, which archives need.
        Next::Becomes(document) => Some(document),
    };
    // The runtime moves the document's index entries along.
    let Some(document) = next else {
        if stored.is_some() {
            ctx.delete(kind.store(), &key)?;
        }
        return Ok(());
    };
    ctx.put_document(kind.store(), &key, &document)?;
    let Some(user) = documents::user_id(&document) else {
        return Ok(());
    };
    if let Some(deleted) = ctx.get_json::<Deleted>(DELETED_USERS, &part(&user))? {
        remove(ctx, kind, &key, &document, deleted.at_ms)?;
        if kind == Kind::Clinician {
            left_clinic(ctx, &document, deleted.at_ms)?;
        }
    }
    Ok(())
}

/// Archives a document, tombstones it in its collection and forgets it.
fn remove(
    ctx: &mut Context<'_>,
    kind: Kind,
    key: &str,
    document: &Document,
    at_ms: i64,
) -> Result<(), ProcessError> {
    let id = document.get("_id").cloned().unwrap_or(Bson::Null);
    let archive = model::archive(kind, document, at_ms);
    ctx.emit(sink_document(kind.archive_topic(), &id, &archive))?;
    ctx.emit(OutputRecord {
        topic: kind.sink().to_owned(),
        key: sink_key(&id),
        value: None,
    })?;
    ctx.delete(kind.store(), key)
}

/// The documents listed under `prefix` in an index, with their table keys.
fn listed(
    ctx: &Context<'_>,
    kind: Kind,
    index: &str,
    prefix: &str,
) -> Result<Vec<(String, Document)>, ProcessError> {
    let mut documents = Vec::new();
    for (entry, _) in ctx.scan_prefix(index, prefix)? {
        let key = expand_key(&entry[prefix.len()..]).into_owned();
        let document = ctx.get_document(kind.store(), &key)?.ok_or_else(|| {
            ProcessError::Fatal(format!(
                "BUG: index {index} lists {key}, which is not stored"
            ))
        })?;
        documents.push((key, document));
    }
    Ok(documents)
}

/// Removes every patient and clinician document of `user`, then the non-custodial patients of
/// each clinic the user's removal left without members (the reference service's rule).
fn delete_user(ctx: &mut Context<'_>, user: &str, at_ms: i64) -> Result<(), ProcessError> {
    let user_key = part(user);
    // A repeated deletion keeps the first time, so replays archive identically.
    let at_ms = match ctx.get_json::<Deleted>(DELETED_USERS, &user_key)? {
        Some(earlier) => earlier.at_ms,
        None => {
            ctx.put_json(DELETED_USERS, &user_key, &Deleted { at_ms })?;
            at_ms
        }
    };
    for (key, document) in listed(ctx, Kind::Patient, PATIENTS_BY_USER, &user_key)? {
        remove(ctx, Kind::Patient, &key, &document, at_ms)?;
    }
    let memberships = listed(ctx, Kind::Clinician, CLINICIANS_BY_USER, &user_key)?;
    for (key, document) in &memberships {
        remove(ctx, Kind::Clinician, key, document, at_ms)?;
    }
    for (_, document) in &memberships {
        left_clinic(ctx, document, at_ms)?;
    }
    Ok(())
}

/// What the removal of the clinician `document` of a deleted user leaves its clinic to do: the
/// orphan rule, and, when they were an admin, the clinic's `admins` without them.
fn left_clinic(ctx: &mut Context<'_>, document: &Document, at_ms: i64) -> Result<(), ProcessError> {
    let (Some(clinic), Some(clinic_id)) = (model::clinic_key(document), document.get("clinicId"))
    else {
        return Ok(());
    };
    release_orphans(ctx, &clinic, at_ms)?;
    if documents::is_admin(document) {
        admins_follow(ctx, &clinic, clinic_id)?;
    }
    Ok(())
}

/// The clinic's `admins` as its admin clinicians left in the table say (oldest first, as the
/// API keeps them), `$set` by the clinics' sink, as the API's `DeleteUserFromClinics` does.
fn admins_follow(
    ctx: &mut Context<'_>,
    clinic: &str,
    clinic_id: &Bson,
) -> Result<(), ProcessError> {
    let mut admins: Vec<(Option<bson::DateTime>, String, String)> = Vec::new();
    for (key, clinician) in listed(
        ctx,
        Kind::Clinician,
        CLINICIANS_BY_CLINIC,
        &clinic_prefix(clinic),
    )? {
        if let (true, Some(user)) = (
            documents::is_admin(&clinician),
            documents::user_id(&clinician),
        ) {
            admins.push((
                clinician.get_datetime("createdTime").ok().copied(),
                key,
                user,
            ));
        }
    }
    admins.sort();
    let admins: Vec<String> = admins.into_iter().map(|(_, _, user)| user).collect();
    let update = bson::doc! { "_id": clinic_id.clone(), "admins": admins };
    ctx.emit(sink_document(SINK_CLINICS, clinic_id, &update))
}

/// Gives every patient and clinician record of `user` the address `email` (`{_id, email,
/// updatedTime}`, `$set` by the sinks), as the API's UpdateClinicUserDetails does; the stored
/// documents take it at once. A clinician record whose clinic has another clinician with that
/// address keeps its own (the API answers that case 409): skipped, counted and logged.
fn change_email(
    ctx: &mut Context<'_>,
    user: &str,
    email: &str,
    at_ms: i64,
) -> Result<(), ProcessError> {
    let user_key = part(user);
    let at = bson::DateTime::from_millis(at_ms);
    for (kind, index) in [
        (Kind::Patient, PATIENTS_BY_USER),
        (Kind::Clinician, CLINICIANS_BY_USER),
    ] {
        for (key, mut document) in listed(ctx, kind, index, &user_key)? {
            if document.get_str("email").ok() == Some(email) {
                continue;
            }
            if kind == Kind::Clinician && address_taken(ctx, &document, email)? {
                ::metrics::counter!(crate::metrics::EMAIL_CONFLICTS).increment(1);
                tracing::warn!(document = %key, "A changed address is another clinician's in the same clinic; this record keeps its own.");
                continue;
            }
            let id = document.get("_id").cloned().unwrap_or(Bson::Null);
            let update = bson::doc! { "_id": id.clone(), "email": email, "updatedTime": at };
            ctx.emit(sink_document(kind.sink(), &id, &update))?;
            document.insert("email", email);
            document.insert("updatedTime", at);
            ctx.put_document(kind.store(), &key, &document)?;
        }
    }
    Ok(())
}

/// Whether another clinician of `clinician`'s clinic has the address `email`.
fn address_taken(
    ctx: &Context<'_>,
    clinician: &Document,
    email: &str,
) -> Result<bool, ProcessError> {
    let Some(clinic) = model::clinic_key(clinician) else {
        return Ok(false);
    };
    let id = clinician.get("_id");
    Ok(listed(
        ctx,
        Kind::Clinician,
        CLINICIANS_BY_CLINIC,
        &clinic_prefix(&clinic),
    )?
    .iter()
    .any(|(_, other)| other.get("_id") != id && other.get_str("email").ok() == Some(email)))
}

/// A clinic with no clinician left, member or pending invite, keeps only its custodial patients,
/// as in the reference service.
fn release_orphans(ctx: &mut Context<'_>, clinic: &str, at_ms: i64) -> Result<(), ProcessError> {
    let prefix = clinic_prefix(clinic);
    if !ctx.scan_prefix(CLINICIANS_BY_CLINIC, &prefix)?.is_empty() {
        return Ok(());
    }
    for (key, patient) in listed(ctx, Kind::Patient, PATIENTS_BY_CLINIC, &prefix)? {
        if !documents::is_custodial(&patient) {
            remove(ctx, Kind::Patient, &key, &patient, at_ms)?;
        }
    }
    Ok(())
}

/// The sink key (shared by every processor that writes a sink topic).
pub use clinic::streams::sink_key;
