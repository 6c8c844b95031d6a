//! The pure logic: keep clinics, clinicians and users' addresses as global tables and patients
//! as a partitioned one; turn the changes that call for an email, and the requests of other
//! processors, into [`Outgoing`] records for the effect stage. No I/O.
//!
//! The global tables are read whole by every instance, so the triggers (clinics' inserts,
//! clinicians' roles changes, patients, invites, requests) are ordinary partitioned streams and
//! the processor runs as several replicas. What a trigger needs may not be in a global table yet
//! (the topics are read side by side, and the API writes a clinic before its first admin's
//! record): the email waits in the task's `parked` store, and the global table's change that
//! brings what it needs sends it ([`Processor::global_changed`]; after a restart,
//! [`Processor::resumed`]).

use std::collections::BTreeMap;
use std::time::Duration;

use bson::{Bson, Document};
use clinic::cdc::{self, CdcRecord, ChangeEvent, Next, Operation};
use clinic::documents;
use clinic::email::{self, EmailRequest};
use clinic::streams::effect::{self, Stage};
use clinic::streams::projection::{Address, Kept as _, follow, follow_user_event, part};
use clinic::streams::store::table_key;
use clinic::streams::{Context, Input, InputFormat, Payload, ProcessError, Processor, Topology};

use serde::{Deserialize, Serialize};

use crate::config::{Inputs, Settings};
use crate::model::{Clinic, Member, Outgoing, Patient, member_key, request_id};
use crate::templates::{
    self, CLINIC_CREATED, CLINICIAN_INVITATION, CLINICIAN_PERMISSIONS_UPDATED,
    CUSTODIAL_ACCOUNT_CREATED, PATIENT_CLINIC_INVITATION, PATIENT_UPLOAD_REMINDER,
};

/// Clinics (names, admins, suppressed notifications); an insert is `clinic_created`.
pub const CLINICS: &str = "clinic.clinics";
/// Clinicians (names, addresses); an invite's insert is `clinician_invitation`, a roles change
/// `clinician_permissions_updated`.
pub const CLINICIANS: &str = "clinic.clinicians";
/// Patients; a custodial insert is `custodial_account_created`, a reminder stamp
/// `patient_upload_reminder`.
pub const PATIENTS: &str = "clinic.patients";
/// Patients' invitations of clinics: an insert is `patient_clinic_invitation`.
pub const PATIENT_INVITES: &str = "clinic.patient_invites";
/// Users' addresses (CloudEvents).
pub const USER_EVENTS: &str = "user.events";
/// The effect stage's requests: one record per email to send.
pub const OUTBOX: &str = "notifications.outbox";
/// The effect stage's compacted log of settled email ids (its dedupe store).
pub const SENT: &str = "notifications.sent";

/// Global store: clinics (`d/<document key>` → [`Clinic`]).
pub const CLINIC_STORE: &str = "clinics";
/// Global store: clinicians (`d/<document key>` → [`Member`], `i/<clinic>|<user>|` → document
/// key).
pub const CLINICIAN_STORE: &str = "clinicians";
/// Global store: addresses from user events (`<user>|` → [`Address`]).
pub const USERS: &str = "users";
/// Store: patients (`d/<document key>` → [`Patient`]), per partition (patients' changes are
/// keyed by the patient).
pub const PATIENT_STORE: &str = "patients";
/// Store: emails waiting for their clinic (`c/<clinic>|<id>`) or their recipient's address
/// (`a/<clinic>|<user>|<id>`), sent when the global table's change that tells it arrives: the
/// CDC topics are read side by side, so a patient's insert can come before its clinic's, and
/// the API writes a clinic before its first admin's record. Per task: the task that decided an
/// email keeps it.
pub const PARKED: &str = "parked";

/// The name the updater of a clinician's roles gets when their own record has none.
pub const UNKNOWN_UPDATER: &str = "Clinic administrator";

/// Metric names of this processor.
pub mod metrics {
    /// Emails handed to the effect stage, by `template`.
    pub const REQUESTED: &str = "clinic_notifications_requested_total";
    /// Changes that would have sent an email but did not, by `reason` (`old`, `no_address`,
    /// `suppressed`, `unknown_member`: a roles change of a clinician neither the change nor the
    /// table describes; `expired`: a parked email whose clinic or address did not come within
    /// `max_age`).
    pub const SKIPPED: &str = "clinic_notifications_skipped_total";
}

/// The effect stage that sends what this processor decides (consumer group
/// `notifications-effects`).
pub fn stage() -> Stage {
    Stage {
        name: crate::NAME.into(),
        requests: OUTBOX.into(),
        done: SENT.into(),
        dlq: format!("{}.dlq", crate::NAME),
    }
}

/// Epoch milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The notifications processor.
pub struct Notifications {
    inputs: Inputs,
    max_age_ms: i64,
    clock: Box<dyn Fn() -> i64 + Send>,
}

impl Notifications {
    /// A processor reading its inputs as `inputs` says, sending nothing for changes older than
    /// `max_age`.
    pub fn new(inputs: Inputs, max_age: Duration) -> Self {
        Self {
            inputs,
            max_age_ms: i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX),
            clock: Box::new(now_ms),
        }
    }

    /// The same with another clock (epoch milliseconds), for tests.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// What the binary runs: a factory of processors configured by `settings`.
    pub fn factory(settings: &Settings) -> impl Fn() -> Self + Send + use<> {
        let (inputs, max_age) = (settings.inputs.clone(), settings.notifications.max_age);
        move || Self::new(inputs.clone(), max_age)
    }

    /// Whether something that happened at `at_ms` is recent enough to mail.
    fn fresh(&self, at_ms: Option<i64>) -> bool {
        let recent = at_ms.is_none_or(|at| (self.clock)().saturating_sub(at) <= self.max_age_ms);
        if !recent {
            skipped("old");
        }
        recent
    }
}

impl Processor for Notifications {
    fn topology(&self) -> Topology {
        let inputs = &self.inputs;
        let mut topology = Topology::new(crate::NAME)
            .global(CLINICS, InputFormat::Cdc(inputs.clinics), CLINIC_STORE)
            .global(
                CLINICIANS,
                InputFormat::Cdc(inputs.clinicians),
                CLINICIAN_STORE,
            );
        if inputs.user_events {
            topology = topology.global(USER_EVENTS, InputFormat::Json, USERS);
        }
        topology
            .stream(CLINICS, InputFormat::Cdc(inputs.clinics))
            .stream(CLINICIANS, InputFormat::Cdc(inputs.clinicians))
            .stream(PATIENTS, InputFormat::Cdc(inputs.patients))
            .stream(PATIENT_INVITES, InputFormat::Cdc(inputs.patient_invites))
            .stream(email::REQUESTS_TOPIC, InputFormat::Avro)
            .store(PATIENT_STORE)
            .store(PARKED)
            .output(OUTBOX)
    }

    fn process(&mut self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let source = format!("{}/{}@{}", input.topic, input.partition, input.offset);
        match (input.topic, input.payload) {
            (CLINICS, Payload::Cdc(record)) => {
                self.clinic(ctx, record, &source, input.timestamp_ms)
            }
            (CLINICIANS, Payload::Cdc(record)) => {
                self.clinician(ctx, record, &source, input.timestamp_ms)
            }
            (PATIENTS, Payload::Cdc(record)) => {
                self.patient(ctx, record, &source, input.timestamp_ms)
            }
            (PATIENT_INVITES, Payload::Cdc(record)) => {
                self.invite(ctx, record, &source, input.timestamp_ms)
            }
            (email::REQUESTS_TOPIC, Payload::Avro(value)) => self.request(ctx, value.as_ref()),
            (topic, _) => Err(ProcessError::Fatal(format!(
                "BUG: unexpected input {topic} or payload"
            ))),
        }
    }

    fn process_global(&self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        match (input.topic, input.payload) {
            (CLINICS, Payload::Cdc(record)) => {
                follow::<Clinic>(ctx, CLINIC_STORE, record).map(drop)
            }
            (CLINICIANS, Payload::Cdc(record)) => {
                follow::<Member>(ctx, CLINICIAN_STORE, record).map(drop)
            }
            (USER_EVENTS, Payload::Json(value)) => {
                follow_user_event(ctx, USERS, input.headers, value.as_ref()).map(drop)
            }
            (topic, _) => Err(ProcessError::Fatal(format!(
                "BUG: unexpected global input {topic} or payload"
            ))),
        }
    }

    /// A clinic that now has a name releases what waited for it; a clinician's record, what
    /// waited for that member's address.
    fn global_changed(
        &mut self,
        store: &str,
        key: &str,
        ctx: &mut Context<'_>,
    ) -> Result<(), ProcessError> {
        let Some(document_key) = key.strip_prefix("d/") else {
            return Ok(());
        };
        match store {
            CLINIC_STORE if Self::clinic_of(ctx, document_key)?.is_some() => {
                self.release(ctx, &waiting_for_clinic(document_key))
            }
            CLINICIAN_STORE => {
                let member: Option<Member> = ctx.get_json(CLINICIAN_STORE, key)?;
                match member.filter(|m| m.email.is_some()).and_then(|m| m.index()) {
                    Some(index) => self.release(ctx, &format!("a/{index}")),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Sends what became sendable while the task was not running, and drops what waited past
    /// `max_age`.
    fn resumed(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        for (key, value) in ctx.scan_prefix(PARKED, "")? {
            let parked = parked(&key, &value)?;
            if self.expired(&parked) {
                ctx.delete(PARKED, &key)?;
            } else if self.sendable(ctx, &parked)? {
                ctx.delete(PARKED, &key)?;
                self.deliver(ctx, parked)?;
            }
        }
        Ok(())
    }
}

fn skipped(reason: &'static str) {
    ::metrics::counter!(metrics::SKIPPED, "reason" => reason).increment(1);
}

/// Where a change came from and when: its identity for request ids (its resume token when the
/// producer carries one, so a change the connector delivers twice is one email, else where it
/// was read), and when it happened (its wall time or oplog time, else the record's timestamp).
/// `None` for a tombstone.
fn origin(
    record: &CdcRecord,
    source: &str,
    timestamp_ms: Option<i64>,
) -> Option<(String, Option<i64>)> {
    let CdcRecord::Change(change) = record else {
        return None;
    };
    let identity = match &change.source.resume_token {
        Some(token) => format!("{}", Bson::Document(token.clone()).into_relaxed_extjson()),
        None => source.to_owned(),
    };
    let at = change
        .source
        .wall_time
        .map(|t| t.timestamp_millis())
        .or_else(|| change.source.cluster_time.map(|t| i64::from(t.time) * 1000))
        .or(timestamp_ms);
    Some((identity, at))
}

/// Hands one email to the effect stage.
fn send(ctx: &mut Context<'_>, email: Outgoing) -> Result<(), ProcessError> {
    templates::check(&email.template, &email.variables)
        .map_err(|error| ProcessError::Fatal(format!("BUG: {error}")))?;
    ::metrics::counter!(metrics::REQUESTED, "template" => email.template.clone()).increment(1);
    ctx.emit(effect::request(OUTBOX, &email.id, &email)?)
}

fn vars<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The change's updated fields, for an update.
fn updated(change: &CdcRecord) -> Option<&Document> {
    match change {
        CdcRecord::Change(event) if event.operation == Operation::Update => {
            Some(&event.updated_fields)
        }
        _ => None,
    }
}

/// The change event, when the record is one of `operation`.
fn change_of(record: &CdcRecord, operation: Operation) -> Option<&ChangeEvent> {
    match record {
        CdcRecord::Change(event) if event.operation == operation => Some(event),
        _ => None,
    }
}

/// Who an email goes to, once its clinic is known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Recipient {
    /// The address is in the email already.
    Address,
    /// This user of the clinic: their clinician record's address, else their user events'.
    User(String),
    /// Every admin of the clinic, unless it suppressed invitation emails (one email each).
    Admins,
}

/// An email decided but not sendable yet: its clinic's name or its recipient's address is not
/// known yet, because the change that tells it sits on another topic that was not read as far
/// (the CDC topics are read side by side, in no order across topics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Parked {
    /// The clinic's document key.
    clinic: String,
    /// When the change that decided it happened (epoch milliseconds): it is dropped once older
    /// than `max_age`, as the change itself would have been.
    at_ms: Option<i64>,
    email: Outgoing,
    recipient: Recipient,
}

/// Where emails waiting for the clinic `clinic` (a document key) are parked:
/// `c/<clinic>|<email id>`.
fn waiting_for_clinic(clinic: &str) -> String {
    format!("c/{clinic}|")
}

/// Where emails waiting for the address of `user` in `clinic` are parked:
/// `a/<clinic>|<user>|<email id>`.
fn waiting_for_address(clinic: &str, user: &str) -> String {
    format!("a/{}", member_key(clinic, user))
}

/// A parked email, as stored under `key`.
fn parked(key: &str, value: &[u8]) -> Result<Parked, ProcessError> {
    serde_json::from_slice(value)
        .map_err(|e| ProcessError::Fatal(format!("store {PARKED} key {key}: unreadable: {e}")))
}

impl Notifications {
    /// A clinic with a name (what emails need of it), by document key.
    fn clinic_of(ctx: &Context<'_>, clinic: &str) -> Result<Option<Clinic>, ProcessError> {
        Ok(ctx
            .get_json::<Clinic>(CLINIC_STORE, &format!("d/{clinic}"))?
            .filter(|c| !c.name.is_empty()))
    }

    /// A clinic member's record, by clinic (document key) and user.
    fn member(ctx: &Context<'_>, clinic: &str, user: &str) -> Result<Option<Member>, ProcessError> {
        let index = format!("i/{}", member_key(clinic, user));
        let Some(key) = ctx.get(CLINICIAN_STORE, &index)? else {
            return Ok(None);
        };
        let key = String::from_utf8_lossy(&key).into_owned();
        ctx.get_json(CLINICIAN_STORE, &format!("d/{key}"))
    }

    /// A user's address: from their record in the clinic, else from the identity service's
    /// events (when they are read).
    fn address_of(
        &self,
        ctx: &Context<'_>,
        clinic: &str,
        user: &str,
    ) -> Result<Option<String>, ProcessError> {
        if let Some(email) = Self::member(ctx, clinic, user)?.and_then(|m| m.email) {
            return Ok(Some(email));
        }
        self.user_address(ctx, user)
    }

    /// A user's address from the identity service's events, when they are read.
    fn user_address(&self, ctx: &Context<'_>, user: &str) -> Result<Option<String>, ProcessError> {
        if !self.inputs.user_events {
            return Ok(None);
        }
        Ok(ctx
            .get_json::<Address>(USERS, &part(user))?
            .map(|a| a.email))
    }

    /// Whether `parked` would be sent now: its clinic is known, and so is its recipient's
    /// address.
    fn sendable(&self, ctx: &Context<'_>, parked: &Parked) -> Result<bool, ProcessError> {
        if Self::clinic_of(ctx, &parked.clinic)?.is_none() {
            return Ok(false);
        }
        match &parked.recipient {
            Recipient::User(user) => Ok(self.address_of(ctx, &parked.clinic, user)?.is_some()),
            Recipient::Address | Recipient::Admins => Ok(true),
        }
    }

    /// Sends `parked` if its clinic (for the clinic's name and admins) and its recipient's
    /// address are known; parks it until they are otherwise.
    fn deliver(&self, ctx: &mut Context<'_>, parked: Parked) -> Result<(), ProcessError> {
        let clinic_key = parked.clinic.clone();
        let Some(clinic) = Self::clinic_of(ctx, &clinic_key)?.filter(|c| !c.name.is_empty()) else {
            let key = format!("{}{}", waiting_for_clinic(&clinic_key), parked.email.id);
            return ctx.put_json(PARKED, &key, &parked);
        };
        let Parked {
            mut email,
            recipient,
            at_ms,
            ..
        } = parked;
        email
            .variables
            .insert("ClinicName".to_owned(), clinic.name.clone());
        match recipient {
            Recipient::Address => send(ctx, email),
            Recipient::User(user) => match self.address_of(ctx, &clinic_key, &user)? {
                Some(to) => {
                    email.to = to;
                    send(ctx, email)
                }
                None => {
                    let key = format!("{}{}", waiting_for_address(&clinic_key, &user), email.id);
                    ctx.put_json(
                        PARKED,
                        &key,
                        &Parked {
                            clinic: clinic_key,
                            at_ms,
                            email,
                            recipient: Recipient::User(user),
                        },
                    )
                }
            },
            Recipient::Admins if clinic.suppress_invitations => {
                skipped("suppressed");
                Ok(())
            }
            Recipient::Admins => {
                for admin in &clinic.admins {
                    let one = Outgoing {
                        id: request_id(&email.id, &email.template, admin),
                        ..email.clone()
                    };
                    self.deliver(
                        ctx,
                        Parked {
                            clinic: clinic_key.clone(),
                            at_ms,
                            email: one,
                            recipient: Recipient::User(admin.clone()),
                        },
                    )?;
                }
                Ok(())
            }
        }
    }

    /// Delivers what was parked under `prefix`, now that what it waited for arrived (what still
    /// lacks something is parked again, under what it lacks now).
    fn release(&self, ctx: &mut Context<'_>, prefix: &str) -> Result<(), ProcessError> {
        for (key, value) in ctx.scan_prefix(PARKED, prefix)? {
            let parked = parked(&key, &value)?;
            ctx.delete(PARKED, &key)?;
            if !self.expired(&parked) {
                self.deliver(ctx, parked)?;
            }
        }
        Ok(())
    }

    /// Whether a parked email waited past `max_age` (then it is dropped, not sent).
    fn expired(&self, parked: &Parked) -> bool {
        let expired = parked
            .at_ms
            .is_some_and(|at| (self.clock)().saturating_sub(at) > self.max_age_ms);
        if expired {
            skipped("expired");
        }
        expired
    }

    /// `clinic_created` to the first admin on the insert of a clinic with a name and admins (the
    /// global table keeps the clinic).
    fn clinic(
        &self,
        ctx: &mut Context<'_>,
        record: CdcRecord,
        source: &str,
        timestamp_ms: Option<i64>,
    ) -> Result<(), ProcessError> {
        let Some((identity, at)) =
            change_of(&record, Operation::Insert).and(origin(&record, source, timestamp_ms))
        else {
            return Ok(());
        };
        let clinic_key = table_key(record.document_id()?);
        let Next::Becomes(document) = cdc::next_document(record, || Ok::<_, ProcessError>(None))?
        else {
            return Ok(());
        };
        let Some(clinic) = Clinic::of(&document)? else {
            return Ok(());
        };
        let Some(admin) = clinic.admins.first() else {
            return Ok(());
        };
        if clinic.name.is_empty() || !self.fresh(at) {
            return Ok(());
        }
        let email = Outgoing {
            id: request_id(&identity, CLINIC_CREATED, admin),
            template: CLINIC_CREATED.into(),
            to: String::new(),
            variables: BTreeMap::new(),
        };
        self.deliver(
            ctx,
            Parked {
                clinic: clinic_key,
                at_ms: at,
                email,
                recipient: Recipient::User(admin.clone()),
            },
        )
    }

    /// `clinician_invitation` to the invited address on the insert of an invite (a clinician
    /// with an `inviteId` and no user), as Tidepool's hydrophone sends on InviteClinician.
    fn clinician_invite(
        &self,
        ctx: &mut Context<'_>,
        record: CdcRecord,
        source: &str,
        timestamp_ms: Option<i64>,
    ) -> Result<(), ProcessError> {
        let Some((identity, at)) = origin(&record, source, timestamp_ms) else {
            return Ok(());
        };
        let Next::Becomes(invite) = cdc::next_document(record, || Ok::<_, ProcessError>(None))?
        else {
            return Ok(());
        };
        let (Some(clinic_id), Some(invite_id)) =
            (invite.get("clinicId"), documents::text(&invite, "inviteId"))
        else {
            return Ok(());
        };
        if documents::user_id(&invite).is_some() {
            return Ok(());
        }
        let Some(to) = documents::text(&invite, "email") else {
            skipped("no_address");
            return Ok(());
        };
        if !self.fresh(at) {
            return Ok(());
        }
        let email = Outgoing {
            id: request_id(&identity, CLINICIAN_INVITATION, &invite_id),
            template: CLINICIAN_INVITATION.into(),
            to,
            variables: vars([
                ("ClinicId", object_id_text(clinic_id)),
                ("InviteId", invite_id),
            ]),
        };
        self.deliver(
            ctx,
            Parked {
                clinic: table_key(clinic_id),
                at_ms: at,
                email,
                recipient: Recipient::Address,
            },
        )
    }

    /// `clinician_permissions_updated` when a clinician's roles changed (the global table keeps
    /// the clinician). The clinician is the change's `fullDocument`, else the table's record.
    fn clinician(
        &self,
        ctx: &mut Context<'_>,
        record: CdcRecord,
        source: &str,
        timestamp_ms: Option<i64>,
    ) -> Result<(), ProcessError> {
        if change_of(&record, Operation::Insert).is_some() {
            return self.clinician_invite(ctx, record, source, timestamp_ms);
        }
        let (Some(updater), Some((identity, at))) = (
            updated(&record).and_then(last_roles_updater),
            origin(&record, source, timestamp_ms),
        ) else {
            return Ok(());
        };
        let stored: Option<Member> = ctx.get_json(
            CLINICIAN_STORE,
            &format!("d/{}", table_key(record.document_id()?)),
        )?;
        let member = match cdc::next_document(record, || {
            Ok::<_, ProcessError>(stored.as_ref().map(Member::to_document))
        })? {
            Next::Becomes(document) => Member::of(&document)?,
            Next::Keep | Next::Gone => None,
        };
        let Some(member) = member else {
            skipped("unknown_member");
            return Ok(());
        };
        let (Some(clinic_id), Some(user)) = (&member.clinic_id, &member.user_id) else {
            return Ok(());
        };
        let Some(to) = member.email.clone() else {
            skipped("no_address");
            return Ok(());
        };
        if !self.fresh(at) {
            return Ok(());
        }
        let clinic = table_key(clinic_id);
        let updater_name = updater
            .as_deref()
            .map(|u| Self::member(ctx, &clinic, u))
            .transpose()?
            .flatten()
            .and_then(|m| m.name)
            .unwrap_or_else(|| UNKNOWN_UPDATER.to_owned());
        let email = Outgoing {
            id: request_id(&identity, CLINICIAN_PERMISSIONS_UPDATED, user),
            template: CLINICIAN_PERMISSIONS_UPDATED.into(),
            to,
            variables: vars([("ClinicianName", updater_name)]),
        };
        self.deliver(
            ctx,
            Parked {
                clinic,
                at_ms: at,
                email,
                recipient: Recipient::Address,
            },
        )
    }

    /// Keeps the patient; `custodial_account_created` on the insert of a custodial patient with
    /// an address and when a custodial patient's address is added or changed later (to the new
    /// one), `patient_upload_reminder` when an update sets `lastUploadReminderTime` (as
    /// Tidepool's worker) or a replace changes it to a time after the epoch (Tidepool's reads
    /// the update's fields, which a replace does not carry, so it never mails on one).
    fn patient(
        &self,
        ctx: &mut Context<'_>,
        record: CdcRecord,
        source: &str,
        timestamp_ms: Option<i64>,
    ) -> Result<(), ProcessError> {
        let updated_reminder = updated(&record).is_some_and(|fields| {
            matches!(fields.get("lastUploadReminderTime"), Some(Bson::DateTime(at)) if at.timestamp_millis() > 0)
        });
        let inserted = change_of(&record, Operation::Insert).is_some();
        let replaced = change_of(&record, Operation::Replace).is_some();
        let updated_email = updated(&record).is_some_and(|fields| fields.contains_key("email"));
        let context = origin(&record, source, timestamp_ms);
        let (_, before, after) = follow::<Patient>(ctx, PATIENT_STORE, record)?;
        let (Some(patient), Some((identity, at))) = (after, context) else {
            return Ok(());
        };
        let reminded = updated_reminder
            || (replaced
                && patient.reminded_at_ms.is_some()
                && patient.reminded_at_ms != before.as_ref().and_then(|b| b.reminded_at_ms));
        // An address added or changed later gets the account email too (Tidepool's worker
        // re-sends the signup invite when a custodial patient's email changes, BACK-3829).
        let readdressed = !inserted
            && match &before {
                Some(before) => before.email != patient.email,
                None => updated_email,
            };
        let template = if patient.custodial && (inserted || readdressed) {
            CUSTODIAL_ACCOUNT_CREATED
        } else if reminded {
            PATIENT_UPLOAD_REMINDER
        } else {
            return Ok(());
        };
        let (Some(clinic_id), Some(user)) = (&patient.clinic_id, &patient.user_id) else {
            return Ok(());
        };
        let Some(to) = patient.email.clone() else {
            skipped("no_address");
            return Ok(());
        };
        if !self.fresh(at) {
            return Ok(());
        }
        let variables = if template == CUSTODIAL_ACCOUNT_CREATED {
            vars([
                ("PatientName", patient.name.clone().unwrap_or_default()),
                ("ClinicId", object_id_text(clinic_id)),
                ("UserId", user.clone()),
            ])
        } else {
            BTreeMap::new()
        };
        let email = Outgoing {
            id: request_id(&identity, template, user),
            template: template.into(),
            to,
            variables,
        };
        self.deliver(
            ctx,
            Parked {
                clinic: table_key(clinic_id),
                at_ms: at,
                email,
                recipient: Recipient::Address,
            },
        )
    }

    /// `patient_clinic_invitation` to each admin of the clinic on the insert of an invite,
    /// unless the clinic suppressed them.
    fn invite(
        &self,
        ctx: &mut Context<'_>,
        record: CdcRecord,
        source: &str,
        timestamp_ms: Option<i64>,
    ) -> Result<(), ProcessError> {
        let (Some(_), Some((identity, at))) = (
            change_of(&record, Operation::Insert),
            origin(&record, source, timestamp_ms),
        ) else {
            return Ok(());
        };
        let Next::Becomes(invite) = cdc::next_document(record, || Ok::<_, ProcessError>(None))?
        else {
            return Ok(());
        };
        let clinic_id = invite
            .get("clinicId")
            .cloned()
            .ok_or_else(|| ProcessError::Poison("a patient invite without clinicId".into()))?;
        if !self.fresh(at) {
            return Ok(());
        }
        let patient_name = invite
            .get_document("profile")
            .ok()
            .and_then(|p| p.get_str("fullName").ok())
            .unwrap_or_default()
            .to_owned();
        let email = Outgoing {
            id: request_id(&identity, PATIENT_CLINIC_INVITATION, "admins"),
            template: PATIENT_CLINIC_INVITATION.into(),
            to: String::new(),
            variables: vars([("PatientName", patient_name)]),
        };
        self.deliver(
            ctx,
            Parked {
                clinic: table_key(&clinic_id),
                at_ms: at,
                email,
                recipient: Recipient::Admins,
            },
        )
    }

    /// A request of another processor: checked, its address looked up when it names a user
    /// only, and passed on under its own id.
    fn request(
        &self,
        ctx: &mut Context<'_>,
        value: Option<&apache_avro::types::Value>,
    ) -> Result<(), ProcessError> {
        let value =
            value.ok_or_else(|| ProcessError::Poison("an email request without a value".into()))?;
        let request =
            EmailRequest::from_avro(value).map_err(|e| ProcessError::Poison(e.to_string()))?;
        templates::check(&request.template, &request.variables)
            .map_err(|e| ProcessError::Poison(e.to_string()))?;
        let address = match (&request.recipient_email, &request.recipient_user_id) {
            (Some(address), _) => Some(address.clone()),
            (None, Some(user)) => self.user_address(ctx, user)?,
            (None, None) => None,
        };
        let to = address.ok_or_else(|| {
            ProcessError::Poison(format!(
                "email request {} has no address and none is known for its user",
                request.id
            ))
        })?;
        if !self.fresh(Some(request.requested_ms)) {
            return Ok(());
        }
        send(
            ctx,
            Outgoing {
                id: request.id,
                template: request.template,
                to,
                variables: request.variables,
            },
        )
    }
}

/// The user who made the newest roles change an update appended: `rolesUpdates` set as a whole
/// (its last element), or appended to (`rolesUpdates.<n>` keys, the highest `n`). `Some(None)`
/// when the change names no updater.
fn last_roles_updater(fields: &Document) -> Option<Option<String>> {
    let newest = fields
        .iter()
        .filter_map(|(key, value)| {
            if key == "rolesUpdates" {
                let last = value.as_array().and_then(|items| items.last());
                return Some((u64::MAX, last));
            }
            let n = key.strip_prefix("rolesUpdates.")?.parse::<u64>().ok()?;
            Some((n, Some(value)))
        })
        .max_by_key(|(n, _)| *n)?;
    Some(
        newest
            .1
            .and_then(Bson::as_document)
            .and_then(|update| update.get_str("updatedBy").ok())
            .filter(|u| !u.is_empty())
            .map(str::to_owned),
    )
}

/// An id as the API shows it (hex for an ObjectId).
fn object_id_text(id: &Bson) -> String {
    match id {
        Bson::ObjectId(oid) => oid.to_hex(),
        Bson::String(text) => text.clone(),
        other => other.to_string(),
    }
}
