//! `clinic reconcile permissions`: whether gatekeeper agrees with the clinic database. The rows
//! gatekeeper should hold are computed from the clinic's patient and clinician documents by the
//! code the permissions processor emits them with ([`crate::gatekeeper`]), and compared with the
//! rows it holds: missing, extra, different. `--fix` sends the corrections through the sink
//! topics, so the sink connectors apply them as they apply the processor's own rows.
//!
//! Both sides are read in `_id` order and merged, so memory does not grow with their size.
//!
//! **The processor's store.** The permissions processor keeps, per document, the projection it
//! last emitted, and emits only when a change alters it. The corrections are the projections of
//! the documents as they are now, which is what that store holds whenever the processor has seen
//! every change: the case for drift made downstream of it (a manual change in gatekeeper, a
//! restored backup, a sink connector reset or failed). Where it missed changes upstream (a source
//! connector reset to `latest`), its store holds an older projection; the next change to such a
//! document emits afresh, unless it brings back exactly the projection the store holds, which
//! would then stay unsent: after drift of that kind, run the processor once with a fresh
//! `streams.application_id` over topics that still hold the documents (docs/operators.md).

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use bson::{Bson, Document, doc};
use futures::TryStreamExt as _;
use mongodb::Database;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

use super::PlanError;
use crate::gatekeeper::{self, Membership, PatientGrant};
use crate::streams::projection::Kept;

/// What `clinic reconcile permissions` compares and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// The clinic service's database (`clinic`).
    pub clinic_db: String,
    /// Gatekeeper's database (`gatekeeper`).
    pub gatekeeper_db: String,
    /// How many ids of each kind of difference to show.
    pub samples: usize,
}

/// The differences of one gatekeeper collection.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Differences {
    /// The gatekeeper collection.
    pub collection: String,
    /// Rows gatekeeper should hold.
    pub expected: u64,
    /// Rows it holds.
    pub present: u64,
    /// Rows it lacks: how many, and the first ids.
    pub missing: Counted<Bson>,
    /// Rows it holds that no document grants: how many, and the first ids.
    pub extra: Counted<Bson>,
    /// Rows whose fields differ: how many, and the first ids with the names of the fields.
    pub different: Counted<(Bson, Vec<String>)>,
    /// Clinic documents that do not project (a field of the wrong type): how many, the first ids.
    pub unreadable: Counted<Bson>,
    /// The corrections: rows to write (missing, different) and to delete (extra).
    #[serde(skip)]
    pub corrections: Vec<(Bson, Option<Document>)>,
}

/// A count and the first `samples` items counted. Samples are ids and field names only: the
/// rows hold user ids and grants, which stay out of reports.
#[derive(Debug, Clone, Serialize)]
pub struct Counted<T> {
    /// How many.
    pub count: u64,
    /// The first ones.
    pub samples: Vec<T>,
    #[serde(skip)]
    limit: usize,
}

impl<T> Default for Counted<T> {
    fn default() -> Self {
        Self {
            count: 0,
            samples: Vec::new(),
            limit: 0,
        }
    }
}

impl<T> Counted<T> {
    fn with_limit(limit: usize) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    fn add(&mut self, item: T) {
        self.count += 1;
        if self.samples.len() < self.limit {
            self.samples.push(item);
        }
    }
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `patient_permissions` against the clinic's patients.
    pub patients: Differences,
    /// `clinician_permissions` against the clinic's clinicians.
    pub clinicians: Differences,
    /// How long it took.
    #[serde(with = "humantime_serde")]
    pub elapsed: Duration,
}

impl Report {
    /// Whether gatekeeper agrees.
    pub fn agrees(&self) -> bool {
        [&self.patients, &self.clinicians]
            .iter()
            .all(|d| d.corrections.is_empty() && d.unreadable.count == 0)
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for d in [&self.patients, &self.clinicians] {
            text.push_str(&format!(
                "{}: {} expected, {} present; {} missing, {} extra, {} different, {} unreadable documents\n",
                d.collection,
                d.expected,
                d.present,
                d.missing.count,
                d.extra.count,
                d.different.count,
                d.unreadable.count
            ));
            let ids = |ids: &[Bson]| {
                ids.iter()
                    .map(|id| id.clone().into_relaxed_extjson().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if !d.missing.samples.is_empty() {
                text.push_str(&format!("  missing: {}\n", ids(&d.missing.samples)));
            }
            if !d.extra.samples.is_empty() {
                text.push_str(&format!("  extra: {}\n", ids(&d.extra.samples)));
            }
            for (id, fields) in &d.different.samples {
                text.push_str(&format!(
                    "  different: {} ({})\n",
                    id.clone().into_relaxed_extjson(),
                    fields.join(", ")
                ));
            }
            if !d.unreadable.samples.is_empty() {
                text.push_str(&format!("  unreadable: {}\n", ids(&d.unreadable.samples)));
            }
        }
        text.push_str(&format!(
            "{} in {:.1} s\n",
            if self.agrees() {
                "gatekeeper agrees with the clinic database"
            } else {
                "gatekeeper differs from the clinic database"
            },
            self.elapsed.as_secs_f64()
        ));
        text
    }
}

/// Compares gatekeeper with the clinic database.
///
/// # Errors
/// A database that cannot be read.
pub async fn permissions(client: &mongodb::Client, options: &Options) -> Result<Report, PlanError> {
    let started = Instant::now();
    let clinic = client.database(&options.clinic_db);
    let gatekeeper = client.database(&options.gatekeeper_db);
    let patients = compare::<PatientGrant>(
        &clinic,
        "patients",
        &gatekeeper,
        gatekeeper::PATIENT_PERMISSIONS,
        doc! { "userId": 1, "clinicId": 1, "permissions": 1 },
        options.samples,
    )
    .await?;
    let clinicians = compare::<Membership>(
        &clinic,
        "clinicians",
        &gatekeeper,
        gatekeeper::CLINICIAN_PERMISSIONS,
        doc! { "userId": 1, "clinicId": 1, "roles": 1 },
        options.samples,
    )
    .await?;
    Ok(Report {
        patients,
        clinicians,
        elapsed: started.elapsed(),
    })
}

fn database_error(error: mongodb::error::Error) -> PlanError {
    PlanError::Database(error.to_string())
}

/// Merges the documents of `source` (projected with `K`) with the rows of `target`, both in
/// `_id` order.
async fn compare<K: Kept>(
    clinic: &Database,
    source: &str,
    gatekeeper: &Database,
    target: &str,
    fields: Document,
    samples: usize,
) -> Result<Differences, PlanError> {
    let mut documents = clinic
        .collection::<Document>(source)
        .find(doc! {})
        .projection(fields)
        .sort(doc! { "_id": 1 })
        .await
        .map_err(database_error)?;
    let mut rows = gatekeeper
        .collection::<Document>(target)
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .map_err(database_error)?;
    let mut differences = Differences {
        collection: format!("{}.{target}", gatekeeper.name()),
        missing: Counted::with_limit(samples),
        extra: Counted::with_limit(samples),
        different: Counted::with_limit(samples),
        unreadable: Counted::with_limit(samples),
        ..Differences::default()
    };
    let mut document = documents.try_next().await.map_err(database_error)?;
    let mut row = rows.try_next().await.map_err(database_error)?;
    loop {
        let order = match (&document, &row) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(d), Some(r)) => bson_order(id_of(d), id_of(r)),
        };
        let expected = match (order, &document) {
            (Ordering::Less | Ordering::Equal, Some(d)) => match K::of(d) {
                Ok(projection) => Some(projection.map(|p| gatekeeper::row(id_of(d), &p))),
                Err(_) => {
                    differences.unreadable.add(id_of(d).clone());
                    None
                }
            },
            _ => None,
        };
        match order {
            Ordering::Less => {
                if let Some(Some(expected)) = expected {
                    differences.expected += 1;
                    let id = id_of(&expected).clone();
                    differences.missing.add(id.clone());
                    differences.corrections.push((id, Some(expected)));
                }
                document = documents.try_next().await.map_err(database_error)?;
            }
            Ordering::Greater => {
                let present = row.take().expect("BUG: a row is there");
                differences.present += 1;
                let id = id_of(&present).clone();
                differences.extra.add(id.clone());
                differences.corrections.push((id, None));
                row = rows.try_next().await.map_err(database_error)?;
            }
            Ordering::Equal => {
                let present = row.take().expect("BUG: a row is there");
                differences.present += 1;
                let id = id_of(&present).clone();
                match expected {
                    Some(Some(expected)) => {
                        differences.expected += 1;
                        let fields = differing(&expected, &present);
                        if !fields.is_empty() {
                            differences.different.add((id.clone(), fields));
                            differences.corrections.push((id, Some(expected)));
                        }
                    }
                    // The document grants nothing (or does not project): no row is due.
                    Some(None) => {
                        differences.extra.add(id.clone());
                        differences.corrections.push((id, None));
                    }
                    None => {}
                }
                document = documents.try_next().await.map_err(database_error)?;
                row = rows.try_next().await.map_err(database_error)?;
            }
        }
    }
    Ok(differences)
}

fn id_of(document: &Document) -> &Bson {
    document.get("_id").unwrap_or(&Bson::Null)
}

/// The fields of `expected` (the projection's, `_id` aside) whose values `present` does not
/// hold; fields gatekeeper's rows hold besides are not the processor's and are left alone.
fn differing(expected: &Document, present: &Document) -> Vec<String> {
    expected
        .iter()
        .filter(|(field, _)| *field != "_id")
        .filter(|(field, value)| present.get(field.as_str()) != Some(value))
        .map(|(field, _)| field.clone())
        .collect()
}

/// MongoDB's order of `_id` values for the types ids have (numbers < strings < ObjectIds), so
/// the merge walks both cursors as the server sorted them. Other types compare by their
/// canonical Extended JSON, after these.
fn bson_order(a: &Bson, b: &Bson) -> Ordering {
    fn rank(value: &Bson) -> u8 {
        match value {
            Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) => 1,
            Bson::String(_) => 2,
            Bson::ObjectId(_) => 3,
            _ => 4,
        }
    }
    match (a, b) {
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::String(x), Bson::String(y)) => x.cmp(y),
        _ if rank(a) != rank(b) => rank(a).cmp(&rank(b)),
        _ => number(a)
            .zip(number(b))
            .and_then(|(x, y)| x.partial_cmp(&y))
            .unwrap_or_else(|| {
                a.clone()
                    .into_canonical_extjson()
                    .to_string()
                    .cmp(&b.clone().into_canonical_extjson().to_string())
            }),
    }
}

fn number(value: &Bson) -> Option<f64> {
    match value {
        Bson::Int32(n) => Some(f64::from(*n)),
        #[allow(
            clippy::cast_precision_loss,
            reason = "an order of ids, not arithmetic"
        )]
        Bson::Int64(n) => Some(*n as f64),
        Bson::Double(n) => Some(*n),
        _ => None,
    }
}

/// Sends the report's corrections to the sink topics (`<prefix>sink.gatekeeper.*`), keyed and
/// valued as the permissions processor writes them: a row to upsert, a tombstone to delete.
/// Returns how many were sent.
///
/// # Errors
/// A record the broker did not take.
pub async fn fix(
    producer: &FutureProducer,
    prefix: &str,
    report: &Report,
) -> Result<usize, PlanError> {
    let mut sent = 0;
    for (differences, topic) in [
        (&report.patients, "sink.gatekeeper.patient_permissions"),
        (&report.clinicians, "sink.gatekeeper.clinician_permissions"),
    ] {
        let topic = format!("{prefix}{topic}");
        for (id, row) in &differences.corrections {
            let key = crate::streams::sink_key(id);
            let value = row.as_ref().map(|row| {
                let mut row = row.clone();
                row.remove("_id");
                Bson::Document(row).into_canonical_extjson().to_string()
            });
            let mut record = FutureRecord::<String, String>::to(&topic).key(&key);
            if let Some(value) = &value {
                record = record.payload(value);
            }
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(error, _)| PlanError::Kafka(format!("sending to {topic}: {error}")))?;
            sent += 1;
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use bson::oid::ObjectId;

    use super::*;

    #[test]
    fn ids_are_ordered_as_mongodb_sorts_them() {
        let (a, b) = (ObjectId::from_bytes([1; 12]), ObjectId::from_bytes([2; 12]));
        let mut ids = vec![
            Bson::ObjectId(b),
            Bson::String("z".into()),
            Bson::Int32(7),
            Bson::ObjectId(a),
            Bson::String("a".into()),
            Bson::Int64(3),
        ];
        ids.sort_by(bson_order);
        assert_eq!(
            ids,
            vec![
                Bson::Int64(3),
                Bson::Int32(7),
                Bson::String("a".into()),
                Bson::String("z".into()),
                Bson::ObjectId(a),
                Bson::ObjectId(b),
            ]
        );
    }

    #[test]
    fn only_the_projections_fields_are_compared() {
        let expected =
            doc! { "_id": 1, "userId": "u", "permissions": { "view": {}, "upload": {} } };
        let same = doc! { "_id": 1, "permissions": { "upload": {}, "view": {} }, "userId": "u", "theirs": true };
        let other = doc! { "_id": 1, "userId": "u", "permissions": { "view": {} } };
        assert!(differing(&expected, &same).is_empty());
        assert_eq!(differing(&expected, &other), vec!["permissions".to_owned()]);
    }
}
