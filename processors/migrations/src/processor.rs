//! The pure logic, in stages joined by repartition topics. Each task first routes what its input
//! partitions bring to the task that looks it up: shares by grantee, profiles and addresses by
//! user, patients by clinic, PENDING migrations by their legacy clinician, clinics to every task.
//! A migration then runs in three keys: the legacy clinician's task sends each share, a chunk per
//! step, to the patient's task, which adds their profile and address and sends it to the
//! clinic's task, which writes the patient, the share's tombstone and the email and tells the
//! migration; the migration completes when every share it sent is moved. No I/O.

use bson::Bson;
use clinic::cdc::{self, CdcRecord, Next, Operation};
use clinic::documents::user_id;
use clinic::email;
use clinic::streams::projection::{
    Address, AddressChange, Kept, address_change, follow, keep_address, part,
};
use clinic::streams::reroute::{REPARTITIONED, Route, everywhere};
use clinic::streams::store::table_key;
use clinic::streams::{
    Context, Input, InputFormat, OutValue, OutputRecord, Payload, ProcessError, Processor,
    Topology, sink_document,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{Inputs, Migration as MigrationSettings, Settings};
use crate::model::{
    self, Clinic, Migration, Move, Moved, PatientRef, Profile, Share, Status, Trigger,
    patient_index,
};

pub use crate::names::*;

/// Metric names of this processor.
pub mod metrics {
    /// Migrations that reached a final status, by `status`.
    pub const FINISHED: &str = "clinic_migrations_finished_total";
    /// Shares moved into clinics.
    pub const MOVED: &str = "clinic_migrations_shares_moved_total";
    /// Migration changes that trigger nothing (not an insert, not PENDING, repeated), and user
    /// events of other types.
    pub const IGNORED: &str = "clinic_migrations_ignored_total";
    /// Migrated patients written without their profile's MRN because another patient of the
    /// clinic has it and the clinic's MRNs are unique (`reason="taken"`), and ones written
    /// without an MRN the clinic requires (`reason="missing"`).
    pub const MRN: &str = "clinic_migrations_mrn_total";
}

/// A step record's value.
#[derive(Debug, Serialize, Deserialize)]
struct Step {
    /// The migration's store key.
    migration: String,
}

/// The migrations processor.
pub struct Migrations {
    inputs: Inputs,
    settings: MigrationSettings,
}

impl Migrations {
    /// A processor reading its inputs as `inputs` says.
    pub fn new(inputs: Inputs, settings: MigrationSettings) -> Self {
        Self { inputs, settings }
    }

    /// What the binary runs: a factory of processors configured by `settings`.
    pub fn factory(settings: &Settings) -> impl Fn() -> Self + Send + use<> {
        let (inputs, migration) = (settings.inputs.clone(), settings.migration);
        move || Self::new(inputs.clone(), migration)
    }
}

impl Processor for Migrations {
    fn topology(&self) -> Topology {
        let inputs = &self.inputs;
        let mut topology = Topology::new(crate::NAME)
            .stream(MIGRATIONS, InputFormat::Cdc(inputs.migrations))
            .stream(PERMS, InputFormat::Cdc(inputs.perms))
            .stream(PATIENTS, InputFormat::Cdc(inputs.patients))
            .stream(CLINICS, InputFormat::Cdc(inputs.clinics))
            .stream(
                inputs.profiles.topic.clone(),
                InputFormat::Cdc(inputs.profiles.format()),
            );
        if inputs.user_events {
            topology = topology.stream(USER_EVENTS, InputFormat::Json);
        }
        let topology = [
            TRIGGERS,
            SHARE_CHANGES,
            PROFILE_CHANGES,
            ADDRESS_CHANGES,
            PATIENT_CHANGES,
            CLINIC_CHANGES,
            STEPS,
            MOVES,
            PLACEMENTS,
            MOVED,
        ]
        .into_iter()
        .fold(topology, Topology::repartition)
        .stream(SHARE_CHANGES, InputFormat::Cdc(REPARTITIONED))
        .stream(PROFILE_CHANGES, InputFormat::Cdc(REPARTITIONED))
        .stream(ADDRESS_CHANGES, InputFormat::Json)
        .stream(PATIENT_CHANGES, InputFormat::Cdc(REPARTITIONED))
        .stream(CLINIC_CHANGES, InputFormat::Cdc(REPARTITIONED))
        .stream(STEPS, InputFormat::Json)
        .stream(MOVED, InputFormat::Json)
        // A migration starts only once every table has been read to where it stood when the
        // migration arrived: no share is missed for lagging behind its trigger. Likewise a share
        // takes its patient's profile, and is placed in the clinic, only once the profiles and
        // the clinic's patients routed before have been read.
        .stream_after_others(TRIGGERS, InputFormat::Cdc(REPARTITIONED))
        .stream_after_others(MOVES, InputFormat::Json)
        .stream_after_others(PLACEMENTS, InputFormat::Json);
        [
            ROUTES,
            SHARES,
            PATIENT_STORE,
            CLINIC_STORE,
            PROFILE_STORE,
            USERS,
            MIGRATION_STORE,
        ]
        .into_iter()
        .fold(topology, Topology::store)
        // The tables as large as the user base: on disk when the instance has a state
        // directory (the chart gives it a volume).
        .persistent(ROUTES)
        .persistent(SHARES)
        .persistent(PATIENT_STORE)
        .persistent(PROFILE_STORE)
        .persistent(USERS)
        .output(SINK_PATIENTS)
        .output(SINK_MIGRATIONS)
        .output(SINK_PERMS)
        .output(email::REQUESTS_TOPIC)
    }

    fn process(&mut self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let at_ms = input.timestamp_ms.unwrap_or_default();
        match (input.topic, input.payload) {
            // Routing: each change on to the task that looks it up.
            (MIGRATIONS, Payload::Cdc(record)) => route_trigger(ctx, record),
            (PERMS, Payload::Cdc(record)) => route(SHARES_ROUTE).forward(ctx, record, |_, d| {
                Share::of(d)?
                    .map(|share| share.grantee)
                    .ok_or_else(|| ProcessError::Poison("a perms row without userId".into()))
            }),
            (PATIENTS, Payload::Cdc(record)) => {
                route(PATIENTS_ROUTE).forward(ctx, record, |id, d| {
                    Ok(d.get("clinicId")
                        .filter(|c| !matches!(c, Bson::Null))
                        .map_or_else(|| table_key(id), table_key))
                })
            }
            (CLINICS, Payload::Cdc(record)) => everywhere(ctx, CLINIC_CHANGES, record),
            (USER_EVENTS, Payload::Json(value)) => {
                let Some(change) = address_change(input.headers, value.as_ref())? else {
                    return ignored("user event of another type");
                };
                ctx.emit(OutputRecord {
                    topic: ADDRESS_CHANGES.to_owned(),
                    key: change.user.clone(),
                    value: Some(as_json(&change)?),
                })
            }
            // The tables, each kept in the task that looks it up.
            (SHARE_CHANGES, Payload::Cdc(record)) => {
                let (key, before, after) = follow::<Share>(ctx, SHARES, record)?;
                self.share_changed(ctx, &key, before.as_ref(), after.as_ref())
            }
            (PROFILE_CHANGES, Payload::Cdc(record)) => {
                follow::<Profile>(ctx, PROFILE_STORE, record).map(drop)
            }
            (ADDRESS_CHANGES, Payload::Json(value)) => {
                keep_address(ctx, USERS, &routed::<AddressChange>(value)?)
            }
            (PATIENT_CHANGES, Payload::Cdc(record)) => {
                follow::<PatientRef>(ctx, PATIENT_STORE, record).map(drop)
            }
            (CLINIC_CHANGES, Payload::Cdc(record)) => {
                follow::<Clinic>(ctx, CLINIC_STORE, record).map(drop)
            }
            // A migration: in the legacy clinician's task, then each share in its patient's and
            // its clinic's, and back.
            (TRIGGERS, Payload::Cdc(record)) => self.trigger(ctx, record, at_ms),
            (STEPS, Payload::Json(value)) => {
                let step = routed::<Step>(value)?;
                self.step(ctx, &step.migration, at_ms)
            }
            (MOVES, Payload::Json(value)) => with_profile(ctx, routed(value)?),
            (PLACEMENTS, Payload::Json(value)) => place(ctx, routed(value)?),
            (MOVED, Payload::Json(value)) => self.moved(ctx, routed(value)?, at_ms),
            (topic, Payload::Cdc(record)) if topic == self.inputs.profiles.topic => {
                route(PROFILES_ROUTE).forward(ctx, record, |_, d| {
                    user_id(d)
                        .ok_or_else(|| ProcessError::Poison("a profile without userId".into()))
                })
            }
            (topic, _) => Err(ProcessError::Fatal(format!(
                "BUG: unexpected input {topic} or payload"
            ))),
        }
    }
}

/// Where shares, patients and profiles are routed, and their prefixes in [`ROUTES`].
const SHARES_ROUTE: (&str, &str) = ("s/", SHARE_CHANGES);
const PATIENTS_ROUTE: (&str, &str) = ("p/", PATIENT_CHANGES);
const PROFILES_ROUTE: (&str, &str) = ("f/", PROFILE_CHANGES);

fn route((prefix, topic): (&'static str, &'static str)) -> Route<'static> {
    Route {
        routes: ROUTES,
        prefix,
        topic,
    }
}

/// A PENDING migration's insert, on to its legacy clinician's task; anything else about
/// migrations is not acted on.
fn route_trigger(ctx: &mut Context<'_>, record: CdcRecord) -> Result<(), ProcessError> {
    let CdcRecord::Change(change) = record else {
        return ignored("migration tombstone");
    };
    // The source connector's copy of existing documents reports inserts, Debezium's
    // snapshot reads: both are migrations to run.
    if !matches!(change.operation, Operation::Insert | Operation::Snapshot) {
        return ignored("migration change other than an insert");
    }
    let Some(document) = &change.full_document else {
        return ignored("migration insert without a document");
    };
    let trigger = Trigger::of(document)?;
    if trigger.status != "PENDING" {
        return ignored("migration inserted with a status other than PENDING");
    }
    ctx.emit(OutputRecord {
        topic: TRIGGERS.to_owned(),
        key: trigger.legacy,
        value: Some(clinic::streams::reroute::changed(&change)),
    })
}

/// A record of one of the processor's own repartition topics, which only it writes: one it
/// cannot read is a bug.
fn routed<T: DeserializeOwned>(value: Option<serde_json::Value>) -> Result<T, ProcessError> {
    let value =
        value.ok_or_else(|| ProcessError::Fatal("BUG: a routed record without value".into()))?;
    serde_json::from_value(value)
        .map_err(|e| ProcessError::Fatal(format!("BUG: a routed record: {e}")))
}

fn as_json(value: &impl Serialize) -> Result<OutValue, ProcessError> {
    serde_json::to_value(value)
        .map(OutValue::Json)
        .map_err(|e| ProcessError::Fatal(format!("BUG: a routed record as JSON: {e}")))
}

fn ignored(what: &str) -> Result<(), ProcessError> {
    ::metrics::counter!(metrics::IGNORED).increment(1);
    tracing::debug!(what, "Ignored a record.");
    Ok(())
}

impl Migrations {
    /// A PENDING migration's insert, routed to its legacy clinician's task: starts it.
    fn trigger(
        &self,
        ctx: &mut Context<'_>,
        record: CdcRecord,
        at_ms: i64,
    ) -> Result<(), ProcessError> {
        let Next::Becomes(document) = cdc::next_document(record, || Ok::<_, ProcessError>(None))?
        else {
            return Err(ProcessError::Fatal(
                "BUG: a routed migration without its document".into(),
            ));
        };
        let trigger = Trigger::of(&document)?;
        let key = table_key(&trigger.id);
        if ctx.get(MIGRATION_STORE, &format!("m/{key}"))?.is_some() {
            return ignored("migration already taken on");
        }
        let mut migration = Migration {
            id: trigger.id.clone(),
            clinic_id: trigger.clinic_id.clone(),
            legacy: trigger.legacy.clone(),
            status: Status::Running,
            cursor: None,
            sent: 0,
            listed: false,
            moved: 0,
            created: 0,
            at_ms: trigger.created_ms.unwrap_or(at_ms),
            clinic_name: String::new(),
            legacy_name: String::new(),
        };
        let clinic: Option<Clinic> = ctx.get_json(
            CLINIC_STORE,
            &format!("d/{}", table_key(&trigger.clinic_id)),
        )?;
        let Some(clinic) = clinic else {
            return fail(ctx, &key, migration, at_ms, "its clinic does not exist");
        };
        if ctx
            .get(MIGRATION_STORE, &running_key(&trigger.legacy))?
            .is_some()
        {
            return fail(
                ctx,
                &key,
                migration,
                at_ms,
                "another migration of this user is running",
            );
        }
        migration.legacy_name = profile_of(ctx, &trigger.legacy)?
            .and_then(|p| p.full_name)
            .unwrap_or_else(|| clinic.name.clone());
        migration.clinic_name = clinic.name;
        emit_status(ctx, &migration, Status::Running, at_ms, None)?;
        ctx.write_raw(
            MIGRATION_STORE,
            &running_key(&trigger.legacy),
            key.clone().into_bytes(),
        )?;
        self.advance(ctx, &key, migration, at_ms)
    }

    /// A step record: the next chunk of a running migration.
    fn step(&self, ctx: &mut Context<'_>, key: &str, at_ms: i64) -> Result<(), ProcessError> {
        let migration: Option<Migration> = ctx.get_json(MIGRATION_STORE, &format!("m/{key}"))?;
        match migration {
            Some(migration) if migration.status == Status::Running => {
                self.advance(ctx, key, migration, at_ms)
            }
            _ => ignored("step of a migration that is not running"),
        }
    }

    /// Sends the next chunk of shares on; asks for another step when more remain.
    fn advance(
        &self,
        ctx: &mut Context<'_>,
        key: &str,
        mut migration: Migration,
        at_ms: i64,
    ) -> Result<(), ProcessError> {
        let chunk = self.settings.chunk_size;
        let prefix = format!("i/{}", part(&migration.legacy));
        let entries =
            ctx.scan_prefix_after(SHARES, &prefix, migration.cursor.as_deref(), chunk + 1)?;
        let more = entries.len() > chunk;
        for (index_key, row_key) in entries.into_iter().take(chunk) {
            let share = stored_share(ctx, &row_key)?;
            send(ctx, key, &mut migration, share)?;
            migration.cursor = Some(index_key);
        }
        if more {
            ctx.emit(OutputRecord {
                topic: STEPS.to_owned(),
                key: migration.legacy.clone(),
                value: Some(as_json(&Step {
                    migration: key.to_owned(),
                })?),
            })?;
        } else {
            migration.listed = true;
        }
        finish(ctx, key, migration, at_ms)
    }

    /// A share that appears while its grantee's migration runs, behind the migration's cursor,
    /// is sent at once (one ahead of the cursor is sent by a later step). Once every share was
    /// sent, new shares to the legacy account stay where they are.
    fn share_changed(
        &self,
        ctx: &mut Context<'_>,
        row_key: &str,
        before: Option<&Share>,
        after: Option<&Share>,
    ) -> Result<(), ProcessError> {
        let Some((share, index)) = after.and_then(|s| Some((s, s.by_grantee(row_key)?))) else {
            return Ok(());
        };
        if before.and_then(|s| s.by_grantee(row_key)).as_ref() == Some(&index) {
            return Ok(());
        }
        let Some(running) = ctx.get(MIGRATION_STORE, &running_key(&share.grantee))? else {
            return Ok(());
        };
        let key = String::from_utf8_lossy(&running).into_owned();
        let Some(mut migration) =
            ctx.get_json::<Migration>(MIGRATION_STORE, &format!("m/{key}"))?
        else {
            return Err(ProcessError::Fatal(format!(
                "BUG: running migration {key} is not stored"
            )));
        };
        let index_key = format!("i/{index}");
        if migration
            .cursor
            .as_deref()
            .is_some_and(|cursor| index_key.as_str() <= cursor)
        {
            send(ctx, &key, &mut migration, share.clone())?;
            ctx.put_json(MIGRATION_STORE, &format!("m/{key}"), &migration)?;
        }
        Ok(())
    }

    /// A share moved (in the legacy clinician's task): counted; the last one completes the
    /// migration.
    fn moved(&self, ctx: &mut Context<'_>, moved: Moved, at_ms: i64) -> Result<(), ProcessError> {
        let stored = ctx.get_json::<Migration>(MIGRATION_STORE, &format!("m/{}", moved.key))?;
        let Some(mut migration) = stored.filter(|m| m.status == Status::Running) else {
            return Err(ProcessError::Fatal(format!(
                "BUG: a share moved for migration {}, which is not running",
                moved.key
            )));
        };
        migration.moved += 1;
        migration.created += u64::from(moved.created);
        finish(ctx, &moved.key, migration, at_ms)
    }
}

/// Stores a running migration; completes it when every share is sent and moved.
fn finish(
    ctx: &mut Context<'_>,
    key: &str,
    mut migration: Migration,
    at_ms: i64,
) -> Result<(), ProcessError> {
    if migration.listed && migration.moved == migration.sent {
        migration.status = Status::Completed;
        emit_status(ctx, &migration, Status::Completed, at_ms, None)?;
        let address = address_of(ctx, &migration.legacy, None)?;
        ctx.emit(model::migration_complete(&migration, address.as_deref()).record())?;
        ctx.delete(MIGRATION_STORE, &running_key(&migration.legacy))?;
        ::metrics::counter!(metrics::FINISHED, "status" => "COMPLETED").increment(1);
        tracing::info!(
            migration = key,
            moved = migration.moved,
            created = migration.created,
            "Migration completed."
        );
    }
    ctx.put_json(MIGRATION_STORE, &format!("m/{key}"), &migration)
}

fn running_key(legacy: &str) -> String {
    format!("r/{}", part(legacy))
}

fn stored_share(ctx: &Context<'_>, row_key: &[u8]) -> Result<Share, ProcessError> {
    let row_key = String::from_utf8_lossy(row_key);
    ctx.get_json(SHARES, &format!("d/{row_key}"))?
        .ok_or_else(|| ProcessError::Fatal(format!("BUG: share {row_key} is indexed, not stored")))
}

/// Sends a share on to its patient's task (first of the two stages that move it).
fn send(
    ctx: &mut Context<'_>,
    key: &str,
    migration: &mut Migration,
    share: Share,
) -> Result<(), ProcessError> {
    migration.sent += 1;
    let next = Move {
        key: key.to_owned(),
        migration: Migration {
            cursor: None,
            ..migration.clone()
        },
        profile: None,
        address: None,
        share,
    };
    ctx.emit(OutputRecord {
        topic: MOVES.to_owned(),
        key: next.share.sharer.clone(),
        value: Some(as_json(&next)?),
    })
}

/// A share to move, in its patient's task: on to the clinic's task with the patient's profile and
/// address.
fn with_profile(ctx: &mut Context<'_>, mut next: Move) -> Result<(), ProcessError> {
    let sharer = &next.share.sharer;
    next.profile = profile_of(ctx, sharer)?;
    next.address = address_of(ctx, sharer, next.profile.as_ref())?;
    ctx.emit(OutputRecord {
        topic: PLACEMENTS.to_owned(),
        key: table_key(&next.migration.clinic_id),
        value: Some(as_json(&next)?),
    })
}

/// Moves one share, in its clinic's task: the patient document (unless the user is a patient of
/// the clinic already: that one is left as it is), the share's tombstone, the patient's email;
/// then tells the migration.
fn place(ctx: &mut Context<'_>, next: Move) -> Result<(), ProcessError> {
    let Move {
        key,
        migration,
        share,
        profile,
        address,
    } = next;
    let index = format!("i/{}", patient_index(&migration.clinic_id, &share.sharer));
    let created = ctx.get(PATIENT_STORE, &index)?.is_none();
    if created {
        let profile = mrn_ruled(ctx, &migration, profile)?;
        let patient =
            model::patient_document(&migration, &share, profile.as_ref(), address.as_deref());
        let id = patient.get("_id").cloned().unwrap_or(Bson::Null);
        // A patient of the clinic from now on, before its change event comes back, with its
        // MRN taken.
        ctx.write_raw(PATIENT_STORE, &index, Vec::new())?;
        if let Some(mrn) = profile.as_ref().and_then(|p| p.mrn.as_deref()) {
            let taken = format!("i/{}", model::mrn_index(&migration.clinic_id, mrn));
            ctx.write_raw(PATIENT_STORE, &taken, Vec::new())?;
        }
        ctx.emit(sink_document(SINK_PATIENTS, &id, &patient))?;
    }
    ctx.emit(OutputRecord {
        topic: SINK_PERMS.to_owned(),
        key: clinic::streams::sink_key(&share.id),
        value: None,
    })?;
    if let Some(address) = &address {
        ctx.emit(model::migrate_patient(&migration, &share.sharer, address).record())?;
    }
    ::metrics::counter!(metrics::MOVED).increment(1);
    ctx.emit(OutputRecord {
        topic: MOVED.to_owned(),
        key: migration.legacy.clone(),
        value: Some(as_json(&Moved { key, created })?),
    })
}

/// The profile a migrated patient is written from, under the clinic's MRN rules as the API
/// keeps them: with unique MRNs, an MRN another patient of the clinic has is left out (the
/// share still moves: a migration cannot choose between two patients' MRNs); a required MRN
/// the profile lacks cannot be made up, so the patient is written without one. Both counted.
fn mrn_ruled(
    ctx: &Context<'_>,
    migration: &Migration,
    profile: Option<Profile>,
) -> Result<Option<Profile>, ProcessError> {
    let clinic: Option<Clinic> = ctx.get_json(
        CLINIC_STORE,
        &format!("d/{}", table_key(&migration.clinic_id)),
    )?;
    let Some(clinic) = clinic else {
        return Ok(profile);
    };
    let Some(mut profile) = profile else {
        if clinic.mrn_required {
            ::metrics::counter!(metrics::MRN, "reason" => "missing").increment(1);
        }
        return Ok(None);
    };
    if let Some(mrn) = profile.mrn.as_deref() {
        let taken = format!("i/{}", model::mrn_index(&migration.clinic_id, mrn));
        if clinic.mrn_unique && ctx.get(PATIENT_STORE, &taken)?.is_some() {
            ::metrics::counter!(metrics::MRN, "reason" => "taken").increment(1);
            tracing::warn!(migration = %table_key(&migration.id), "A migrated patient's MRN is another patient's in the clinic, whose MRNs are unique: written without it.");
            profile.mrn = None;
        }
    }
    if clinic.mrn_required && profile.mrn.is_none() {
        ::metrics::counter!(metrics::MRN, "reason" => "missing").increment(1);
    }
    Ok(Some(profile))
}

/// A migration that cannot run: FAILED with the reason, nothing else written.
fn fail(
    ctx: &mut Context<'_>,
    key: &str,
    mut migration: Migration,
    at_ms: i64,
    reason: &str,
) -> Result<(), ProcessError> {
    migration.status = Status::Failed;
    emit_status(ctx, &migration, Status::Failed, at_ms, Some(reason))?;
    ::metrics::counter!(metrics::FINISHED, "status" => "FAILED").increment(1);
    tracing::warn!(migration = key, reason, "Migration failed.");
    ctx.put_json(MIGRATION_STORE, &format!("m/{key}"), &migration)
}

fn emit_status(
    ctx: &mut Context<'_>,
    migration: &Migration,
    status: Status,
    at_ms: i64,
    reason: Option<&str>,
) -> Result<(), ProcessError> {
    let row = model::status_row(status, at_ms, reason);
    ctx.emit(sink_document(SINK_MIGRATIONS, &migration.id, &row))
}

fn profile_of(ctx: &Context<'_>, user: &str) -> Result<Option<Profile>, ProcessError> {
    let Some(key) = ctx.get(PROFILE_STORE, &format!("i/{}", part(user)))? else {
        return Ok(None);
    };
    let key = String::from_utf8_lossy(&key).into_owned();
    ctx.get_json(PROFILE_STORE, &format!("d/{key}"))
}

/// A user's address: their username, else their profile's address.
fn address_of(
    ctx: &Context<'_>,
    user: &str,
    profile: Option<&Profile>,
) -> Result<Option<String>, ProcessError> {
    if let Some(address) = ctx.get_json::<Address>(USERS, &part(user))? {
        return Ok(Some(address.email));
    }
    let profile = match profile {
        Some(profile) => Some(profile.clone()),
        None => profile_of(ctx, user)?,
    };
    Ok(profile.and_then(|p| p.email))
}
