//! The pure logic: keep the legacy shares, the clinics' patients, clinic names, profiles and
//! addresses as tables; on a PENDING migration move every share of the legacy clinician into
//! the clinic, a chunk per step. No I/O.

use bson::Bson;
use clinic::cdc::{self, CdcRecord, Next, Operation};
use clinic::email;
use clinic::streams::projection::{Address, follow, follow_user_event, part};
use clinic::streams::store::table_key;
use clinic::streams::{
    Context, Input, InputFormat, OutValue, OutputRecord, Payload, ProcessError, Processor,
    Topology, sink_document,
};
use serde::{Deserialize, Serialize};

use crate::config::{Inputs, Migration as MigrationSettings, Settings};
use crate::model::{
    self, Clinic, Migration, PatientRef, Profile, Share, Status, Trigger, patient_index,
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
            .single_task()
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
        [
            SHARES,
            PATIENT_STORE,
            CLINIC_STORE,
            PROFILE_STORE,
            USERS,
            MIGRATION_STORE,
        ]
        .into_iter()
        .fold(topology, Topology::store)
        .stream(STEPS, InputFormat::Json)
        // A migration starts only once every table has been read to where it stood when the
        // migration arrived: no share is missed for lagging behind its trigger.
        .stream_after_others(MIGRATIONS, InputFormat::Cdc(inputs.migrations))
        .output(SINK_PATIENTS)
        .output(SINK_MIGRATIONS)
        .output(SINK_PERMS)
        .output(email::REQUESTS_TOPIC)
        .output(STEPS)
    }

    fn process(&mut self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let at_ms = input.timestamp_ms.unwrap_or_default();
        match (input.topic, input.payload) {
            (MIGRATIONS, Payload::Cdc(record)) => self.trigger(ctx, record, at_ms),
            (STEPS, Payload::Json(value)) => {
                let step: Step = value
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|e| ProcessError::Poison(format!("a step record: {e}")))?
                    .ok_or_else(|| ProcessError::Poison("a step record without value".into()))?;
                self.step(ctx, &step.migration, at_ms)
            }
            (PERMS, Payload::Cdc(record)) => {
                let (key, before, after) = follow::<Share>(ctx, SHARES, record)?;
                self.share_changed(ctx, &key, before.as_ref(), after.as_ref())
            }
            (PATIENTS, Payload::Cdc(record)) => {
                follow::<PatientRef>(ctx, PATIENT_STORE, record).map(drop)
            }
            (CLINICS, Payload::Cdc(record)) => {
                follow::<Clinic>(ctx, CLINIC_STORE, record).map(drop)
            }
            (USER_EVENTS, Payload::Json(value)) => {
                if follow_user_event(ctx, USERS, input.headers, value.as_ref())? {
                    Ok(())
                } else {
                    ignored("user event of another type")
                }
            }
            (topic, Payload::Cdc(record)) if topic == self.inputs.profiles.topic => {
                follow::<Profile>(ctx, PROFILE_STORE, record).map(drop)
            }
            (topic, _) => Err(ProcessError::Fatal(format!(
                "BUG: unexpected input {topic} or payload"
            ))),
        }
    }
}

fn ignored(what: &str) -> Result<(), ProcessError> {
    ::metrics::counter!(metrics::IGNORED).increment(1);
    tracing::debug!(what, "Ignored a record.");
    Ok(())
}

impl Migrations {
    /// A change on `clinic.migrations`: the insert of a PENDING migration starts it.
    fn trigger(
        &self,
        ctx: &mut Context<'_>,
        record: CdcRecord,
        at_ms: i64,
    ) -> Result<(), ProcessError> {
        let CdcRecord::Change(change) = &record else {
            return ignored("migration tombstone");
        };
        // The source connector's copy of existing documents reports inserts, Debezium's
        // snapshot reads: both are migrations to run.
        if !matches!(change.operation, Operation::Insert | Operation::Snapshot) {
            return ignored("migration change other than an insert");
        }
        let Next::Becomes(document) = cdc::next_document(record, || Ok::<_, ProcessError>(None))?
        else {
            return ignored("migration insert without a document");
        };
        let trigger = Trigger::of(&document)?;
        if trigger.status != "PENDING" {
            return ignored("migration inserted with a status other than PENDING");
        }
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

    /// Moves the next chunk of shares; asks for another step when more remain, completes the
    /// migration otherwise.
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
            move_share(ctx, &mut migration, &share)?;
            migration.cursor = Some(index_key);
        }
        if more {
            ctx.emit(OutputRecord {
                topic: STEPS.to_owned(),
                key: key.to_owned(),
                value: Some(OutValue::Json(serde_json::json!({ "migration": key }))),
            })?;
            return ctx.put_json(MIGRATION_STORE, &format!("m/{key}"), &migration);
        }
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
        ctx.put_json(MIGRATION_STORE, &format!("m/{key}"), &migration)
    }

    /// A share that appears while its grantee's migration runs, behind the migration's cursor,
    /// is moved at once (one ahead of the cursor is moved by a later step). After a
    /// migration completed, new shares to the legacy account stay where they are.
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
            move_share(ctx, &mut migration, share)?;
            ctx.put_json(MIGRATION_STORE, &format!("m/{key}"), &migration)?;
        }
        Ok(())
    }
}

fn running_key(legacy: &str) -> String {
    format!("r/{}", part(legacy))
}

fn stored_share(ctx: &Context<'_>, row_key: &[u8]) -> Result<Share, ProcessError> {
    let row_key = String::from_utf8_lossy(row_key);
    ctx.get_json(SHARES, &format!("d/{row_key}"))?
        .ok_or_else(|| ProcessError::Fatal(format!("BUG: share {row_key} is indexed, not stored")))
}

/// Moves one share: the patient document (unless the user is a patient of the clinic
/// already: that one is left as it is), the share's tombstone, the patient's email.
fn move_share(
    ctx: &mut Context<'_>,
    migration: &mut Migration,
    share: &Share,
) -> Result<(), ProcessError> {
    let profile = profile_of(ctx, &share.sharer)?;
    let address = address_of(ctx, &share.sharer, profile.as_ref())?;
    let index = format!("i/{}", patient_index(&migration.clinic_id, &share.sharer));
    if ctx.get(PATIENT_STORE, &index)?.is_none() {
        let profile = mrn_ruled(ctx, migration, profile)?;
        let patient =
            model::patient_document(migration, share, profile.as_ref(), address.as_deref());
        let id = patient.get("_id").cloned().unwrap_or(Bson::Null);
        // A patient of the clinic from now on, before its change event comes back, with its
        // MRN taken.
        ctx.write_raw(PATIENT_STORE, &index, Vec::new())?;
        if let Some(mrn) = profile.as_ref().and_then(|p| p.mrn.as_deref()) {
            let taken = format!("i/{}", model::mrn_index(&migration.clinic_id, mrn));
            ctx.write_raw(PATIENT_STORE, &taken, Vec::new())?;
        }
        ctx.emit(sink_document(SINK_PATIENTS, &id, patient))?;
        migration.created += 1;
    }
    ctx.emit(OutputRecord {
        topic: SINK_PERMS.to_owned(),
        key: clinic::streams::sink_key(&share.id),
        value: None,
    })?;
    if let Some(address) = &address {
        ctx.emit(model::migrate_patient(migration, &share.sharer, address).record())?;
    }
    migration.moved += 1;
    ::metrics::counter!(metrics::MOVED).increment(1);
    Ok(())
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
    ctx.emit(sink_document(SINK_MIGRATIONS, &migration.id, row))
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
