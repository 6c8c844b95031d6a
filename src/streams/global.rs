//! Global tables (Kafka Streams' `GlobalKTable`): every instance keeps all of a small table
//! topic in its global stores, through [`Processor::process_global`], outside any task and
//! transaction. The topic is the table's log: no changelog, and a restart reads it again from
//! the beginning. Pure: the runner's global thread does the Kafka I/O around it, the test driver
//! calls it directly.

use std::sync::{Arc, RwLock};

use super::metrics as names;
use super::processor::{Context, Input, ProcessError, Processor};
use super::record::RawRecord;
use super::store::Stores;
use super::task::{AvroResolved, FatalError, SharedStores, decode};
use super::topology::Topology;

/// A global store's key that a record wrote: `(store, key)`.
pub type Changed = (String, String);

/// The global stores of one instance and how to keep them.
pub struct GlobalTables {
    topology: Topology,
    stores: SharedStores,
}

impl GlobalTables {
    /// Empty global stores for `topology`'s global inputs.
    pub fn new(topology: Topology) -> Self {
        let stores = Arc::new(RwLock::new(Stores::new(&topology.global_stores)));
        Self { topology, stores }
    }

    /// The stores, for the tasks to read.
    pub fn stores(&self) -> SharedStores {
        Arc::clone(&self.stores)
    }

    /// Empties the stores (before reading the topics again from the beginning).
    pub fn clear(&self) {
        *crate::sync::write(&self.stores) = Stores::new(&self.topology.global_stores);
    }

    /// Sets the store-entries gauge of each global store.
    pub fn report_sizes(&self) {
        for (store, size) in super::task::read(&self.stores).sizes() {
            ::metrics::gauge!(names::STORE_ENTRIES, "store" => store.to_owned()).set(size as f64);
        }
    }

    /// Folds one record of a global input into the stores through `processor`, and says which
    /// keys it wrote. A record that cannot be decoded or folded is logged, counted and skipped:
    /// the stream side of the same topic (if any) dead-letters it, and a table keeps its other
    /// keys.
    ///
    /// # Errors
    /// [`FatalError`] when the topic is not a global input or the processor fails fatally.
    pub fn apply<P: Processor>(
        &self,
        processor: &P,
        record: &RawRecord,
        avro: Option<AvroResolved>,
    ) -> Result<Vec<Changed>, FatalError> {
        let fatal = |message: String| FatalError {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            message,
        };
        let (input, _) = self.topology.global_input(&record.topic).ok_or_else(|| {
            fatal(format!(
                "BUG: {} is not a global input of {}",
                record.topic, self.topology.name
            ))
        })?;
        let payload = match decode(input.format, input.fields, record, avro) {
            Ok(Some(payload)) => payload,
            Ok(None) => return Ok(Vec::new()),
            Err(error) => return Ok(skip(record, &error.to_string())),
        };
        let mut stores = crate::sync::write(&self.stores);
        let writes = {
            let mut ctx = Context::keeping_global(&self.topology, &stores);
            let input = Input::of(record, payload);
            match processor.process_global(input, &mut ctx) {
                Ok(()) => ctx.writes,
                Err(ProcessError::Poison(message)) => return Ok(skip(record, &message)),
                Err(ProcessError::Fatal(message)) => return Err(fatal(message)),
            }
        };
        let mut changed = Vec::with_capacity(writes.len());
        for write in writes {
            let store = stores
                .get_mut(&write.store)
                .expect("BUG: writes are checked against declared stores");
            if store.get(&write.key).ok().flatten().as_deref() == write.value.as_deref() {
                continue;
            }
            store.apply(&write.key, write.value.as_deref());
            changed.push((write.store, write.key));
        }
        Ok(changed)
    }
}

fn skip(record: &RawRecord, message: &str) -> Vec<Changed> {
    ::metrics::counter!(names::ERRORS, "class" => "poison").increment(1);
    // Where, not what: the reason can quote the record, and records carry personal data.
    tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, "A global table's record could not be folded; skipped.");
    tracing::debug!(reason = message, "Why the global table skipped it.");
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::driver::TestDriver;
    use crate::streams::processor::{OutValue, OutputRecord, Payload};
    use crate::streams::topology::InputFormat;

    /// Keeps `{"k", "v"}` records of `table`; a stream record `{"k"}` emits the value, and
    /// misbehaves on request.
    struct Lookup;

    impl Processor for Lookup {
        fn topology(&self) -> Topology {
            Topology::new("lookup")
                .global("table", InputFormat::Json, "table")
                .stream("asks", InputFormat::Json)
                .output("answers")
        }

        fn process(&mut self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
            let Payload::Json(Some(ask)) = input.payload else {
                return Err(ProcessError::Poison("not JSON".into()));
            };
            let key = ask["k"].as_str().unwrap_or_default();
            if ask["write"].as_bool() == Some(true) {
                ctx.write_raw("table", key, b"\"from a task\"".to_vec())?;
            }
            let value: Option<String> = ctx.get_json("table", key)?;
            ctx.emit(OutputRecord {
                topic: "answers".into(),
                key: key.to_owned(),
                value: Some(OutValue::Json(value.into())),
            })
        }

        fn process_global(
            &self,
            input: Input<'_>,
            ctx: &mut Context<'_>,
        ) -> Result<(), ProcessError> {
            let Payload::Json(Some(entry)) = input.payload else {
                return Err(ProcessError::Poison("not JSON".into()));
            };
            let (Some(key), Some(value)) = (entry["k"].as_str(), entry["v"].as_str()) else {
                return Err(ProcessError::Poison("no k or v".into()));
            };
            if value == "emit" {
                ctx.emit(OutputRecord {
                    topic: "answers".into(),
                    key: key.to_owned(),
                    value: None,
                })?;
            }
            ctx.put_json("table", key, &value)
        }
    }

    fn answers(driver: &mut TestDriver<Lookup>) -> Vec<serde_json::Value> {
        driver
            .read_output("answers")
            .into_iter()
            .map(|r| match r.value {
                Some(OutValue::Json(value)) => value,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn tasks_read_a_global_table_skipped_records_leave_it_and_misuse_is_fatal() {
        let mut driver = TestDriver::new(Lookup);
        driver
            .pipe("table", None, Some(br#"{"k":"a","v":"one"}"#))
            .expect("kept");
        driver
            .pipe("table", None, Some(b"not json"))
            .expect("skipped");
        driver
            .pipe("table", None, Some(br#"{"k":"b"}"#))
            .expect("skipped");
        driver
            .pipe("asks", None, Some(br#"{"k":"a"}"#))
            .expect("answered");
        assert_eq!(answers(&mut driver), [serde_json::json!("one")]);
        assert_eq!(driver.global_store("table").len(), 1);
        // Nothing skipped from a global table goes to the DLQ: its topic is its log.
        assert!(driver.dead_letters().is_empty());

        let error = driver
            .pipe("asks", None, Some(br#"{"k":"a","write":true}"#))
            .expect_err("a task cannot write a global store");
        assert!(
            error.message.contains("written only by process_global"),
            "{error}"
        );
        let error = driver
            .pipe("table", None, Some(br#"{"k":"c","v":"emit"}"#))
            .expect_err("keeping a global table emits nothing");
        assert!(error.message.contains("emits nothing"), "{error}");
        assert!(driver.global_store("table").get("c").is_none());
    }
}
