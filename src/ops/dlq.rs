//! `clinic dlq`: the suite's dead letters read back, and sent home.
//!
//! The dead-letter topics are the `*.dlq` topics of `topics.yaml` (one per processor, and
//! `connect.sink.dlq`, where the sink connectors put what they could not write), under the
//! deployment's prefix. A processor's dead letter carries `clinic.error.*` headers
//! ([`crate::streams::dlq::headers`]); Kafka Connect's carries `__connect.errors.*` (with
//! `errors.deadletterqueue.context.headers.enable`). Both keep the original key, value and
//! headers, so a letter says where it came from (topic, partition, offset), why, and can be
//! written back.
//!
//! Replay is exactly once per letter: each replayed letter leaves a marker in the compacted
//! topic `dlq.replayed` (key `<dlq topic>/<partition>/<offset>`), written in the same Kafka
//! transaction as the record sent back, and a replay reads the markers first and skips what
//! they name. The transactional id is the same for every replay of a deployment, and it is
//! registered (fencing any replay still running) before the markers are read, so two replays
//! at once cannot both send a letter. A letter goes back to its source topic and partition (the
//! order of a key's records is per partition), with its original headers and
//! `clinic.replay.of`. A letter whose key has a later record in its source partition is
//! *superseded* (sending it back would put an older state over a newer one) and is skipped
//! unless asked for.
//!
//! Dead letters hold personal data: `show` prints keys, values, the record's headers and the
//! error messages (which can quote the record) only with `--reveal`.
//! Topics are read whole into memory (a dead-letter topic is small, or something else is
//! wrong).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use serde::Serialize;

use crate::ops::PlanError;
use crate::streams::dlq::headers;
use crate::streams::kafka::{Health, read_partitions_from};

/// The markers of replayed letters (compacted; unprefixed name).
pub const REPLAYED: &str = "dlq.replayed";
/// What Kafka Connect's error context headers start with.
const CONNECT_PREFIX: &str = "__connect.errors.";
/// The header a replayed record carries: the letter it came from (`<topic>/<partition>/<offset>`).
pub const REPLAY_OF: &str = "clinic.replay.of";

const TIMEOUT: Duration = Duration::from_secs(30);

/// Where a record is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Position {
    /// Topic (full name).
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// One dead letter, decoded.
#[derive(Debug, Clone, Serialize)]
pub struct Letter {
    /// Where it is.
    pub at: Position,
    /// When it was dead-lettered (ms since the Unix epoch).
    pub timestamp: Option<i64>,
    /// Where the record came from, when the headers say.
    pub source: Option<Position>,
    /// The processor or connector that gave up on it.
    pub by: String,
    /// Why, as a class: `poison` (a processor), the exception class (Connect).
    pub reason: String,
    /// The error message, which can quote the record (personal data; shown with `--reveal`
    /// only).
    #[serde(skip)]
    pub message: Option<String>,
    /// The stage it failed in (Connect: `TASK_PUT`, `VALUE_CONVERTER`, …).
    pub stage: Option<String>,
    /// The letter this one is a replay of, if it was replayed and failed again.
    pub replay_of: Option<String>,
    /// Whether a replay already sent it back.
    pub replayed: bool,
    /// The record's key (personal data; shown with `--reveal` only).
    #[serde(skip)]
    pub key: Option<Vec<u8>>,
    /// The record's value (personal data; shown with `--reveal` only).
    #[serde(skip)]
    pub value: Option<Vec<u8>>,
    /// The record's own headers, without the error headers.
    #[serde(skip)]
    pub original_headers: Vec<(String, Vec<u8>)>,
}

impl Letter {
    /// The letter `message` holds; `prefix`: the deployment's topic prefix, which a processor's
    /// source topic header leaves out.
    fn decode(message: &OwnedMessage, prefix: &str) -> Self {
        let mut error: BTreeMap<&str, String> = BTreeMap::new();
        let mut original_headers = Vec::new();
        let mut replay_of = None;
        let mut from_connect = false;
        if let Some(list) = message.headers() {
            for header in list.iter() {
                let value = header.value.unwrap_or_default();
                let text = String::from_utf8_lossy(value).into_owned();
                if let Some(name) = header.key.strip_prefix(headers::PREFIX) {
                    error.insert(name, text);
                } else if let Some(name) = header.key.strip_prefix(CONNECT_PREFIX) {
                    from_connect = true;
                    error.insert(name, text);
                } else {
                    if header.key == REPLAY_OF {
                        replay_of = Some(text);
                    }
                    original_headers.push((header.key.to_owned(), value.to_vec()));
                }
            }
        }
        let number = |name: &str| error.get(name).and_then(|v| v.trim().parse::<i64>().ok());
        let source = error.get("topic").and_then(|topic| {
            Some(Position {
                topic: if from_connect {
                    topic.clone()
                } else {
                    format!("{prefix}{topic}")
                },
                partition: i32::try_from(number("partition")?).ok()?,
                offset: number("offset")?,
            })
        });
        let text = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| error.get(n).cloned())
                .unwrap_or_default()
        };
        Self {
            at: Position {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
            },
            timestamp: message.timestamp().to_millis(),
            source,
            by: text(&["processor", "connector.name"]),
            reason: text(&["class", "exception.class.name"]),
            message: error
                .get("message")
                .or_else(|| error.get("exception.message"))
                .cloned(),
            stage: error.get("stage").cloned(),
            replay_of,
            replayed: false,
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            original_headers,
        }
    }

    /// The letter as text: where, whence, why; with `reveal`, the key and value too.
    pub fn render(&self, reveal: bool) -> String {
        let message = match &self.message {
            Some(message) if reveal => message.as_str(),
            Some(_) => "(its message can quote the record: --reveal shows it)",
            None => "",
        };
        let mut text = format!(
            "{}  from {}  by {}  {}{}\n  {}\n",
            self.at,
            self.source
                .as_ref()
                .map_or_else(|| "?".to_owned(), ToString::to_string),
            if self.by.is_empty() { "?" } else { &self.by },
            self.reason,
            if self.replayed { "  (replayed)" } else { "" },
            message.lines().next().unwrap_or(""),
        );
        if let Some(stage) = &self.stage {
            text.push_str(&format!("  stage {stage}\n"));
        }
        if let Some(of) = &self.replay_of {
            text.push_str(&format!("  dead-lettered again after a replay of {of}\n"));
        }
        let shown = |bytes: &Option<Vec<u8>>| {
            bytes.as_ref().map_or_else(
                || "null".to_owned(),
                |b| String::from_utf8_lossy(b).into_owned(),
            )
        };
        if reveal {
            text.push_str(&format!(
                "  key   {}\n  value {}\n",
                shown(&self.key),
                shown(&self.value)
            ));
            for (name, value) in &self.original_headers {
                text.push_str(&format!(
                    "  header {name}: {}\n",
                    String::from_utf8_lossy(value)
                ));
            }
        } else {
            text.push_str(&format!(
                "  key and value: {} and {} bytes (--reveal shows them)\n",
                self.key.as_ref().map_or(0, Vec::len),
                self.value.as_ref().map_or(0, Vec::len)
            ));
        }
        text
    }

    /// The letter as JSON; with `reveal`, the key, value and headers too (as UTF-8 text, lossy).
    pub fn to_json(&self, reveal: bool) -> serde_json::Value {
        let mut json = serde_json::to_value(self).expect("BUG: a letter serializes");
        if reveal {
            let text =
                |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
            json["key"] = text(&self.key).into();
            json["message"] = self.message.clone().into();
            json["value"] = text(&self.value).into();
            json["headers"] = self
                .original_headers
                .iter()
                .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned().into()))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        json
    }
}

/// Which letters a command takes.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this dead-letter topic (full name).
    pub dlq: Option<String>,
    /// Only letters from this source topic (full name).
    pub source: Option<String>,
    /// Only letters whose reason contains this (case-insensitive).
    pub reason: Option<String>,
    /// Only letters at these offsets of their dead-letter topic (inclusive).
    pub offsets: Option<(i64, i64)>,
}

impl Selection {
    fn takes(&self, letter: &Letter) -> bool {
        self.dlq.as_ref().is_none_or(|t| *t == letter.at.topic)
            && self
                .source
                .as_ref()
                .is_none_or(|t| letter.source.as_ref().is_some_and(|s| s.topic == *t))
            && self
                .reason
                .as_ref()
                .is_none_or(|r| letter.reason.to_lowercase().contains(&r.to_lowercase()))
            && self
                .offsets
                .is_none_or(|(from, to)| (from..=to).contains(&letter.at.offset))
    }

    /// Whether nothing narrows it (replay asks for `--all` then).
    pub fn is_everything(&self) -> bool {
        self.dlq.is_none()
            && self.source.is_none()
            && self.reason.is_none()
            && self.offsets.is_none()
    }
}

/// The dead-letter topics and where they are.
pub struct DeadLetters {
    brokers: String,
    prefix: String,
    topics: Vec<String>,
}

/// Counts of one dead-letter topic.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// The topic.
    pub topic: String,
    /// Letters in it.
    pub total: usize,
    /// Of which sent back already.
    pub replayed: usize,
    /// By reason.
    pub by_reason: BTreeMap<String, usize>,
    /// By source topic.
    pub by_source: BTreeMap<String, usize>,
}

impl DeadLetters {
    /// The `*.dlq` topics of `topics` (the parsed `topics.yaml`) under `prefix`.
    pub fn new(brokers: &str, prefix: &str, topics: &crate::ops::topics::TopicsFile) -> Self {
        Self {
            brokers: brokers.to_owned(),
            prefix: prefix.to_owned(),
            topics: topics
                .topics
                .keys()
                .filter(|t| t.ends_with(".dlq"))
                .map(|t| format!("{prefix}{t}"))
                .collect(),
        }
    }

    /// The dead-letter topics (full names).
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    fn replayed_topic(&self) -> String {
        format!("{}{REPLAYED}", self.prefix)
    }

    /// Every letter `selection` takes, marked when already replayed.
    ///
    /// # Errors
    /// Kafka unreachable, or a topic missing.
    pub async fn letters(&self, selection: &Selection) -> Result<Vec<Letter>, PlanError> {
        let replayed = self.replayed().await?;
        let mut letters = Vec::new();
        for topic in &self.topics {
            if selection.dlq.as_ref().is_some_and(|t| t != topic) {
                continue;
            }
            for message in read_topic(&self.brokers, topic).await? {
                let mut letter = Letter::decode(&message, &self.prefix);
                if selection.takes(&letter) {
                    letter.replayed = replayed.contains(&letter.at.to_string());
                    letters.push(letter);
                }
            }
        }
        Ok(letters)
    }

    /// Counts per dead-letter topic.
    ///
    /// # Errors
    /// As [`Self::letters`].
    pub async fn counts(&self) -> Result<Vec<Counts>, PlanError> {
        let letters = self.letters(&Selection::default()).await?;
        let mut counts: BTreeMap<String, Counts> = self
            .topics
            .iter()
            .map(|t| {
                (
                    t.clone(),
                    Counts {
                        topic: t.clone(),
                        ..Counts::default()
                    },
                )
            })
            .collect();
        for letter in &letters {
            let entry = counts.entry(letter.at.topic.clone()).or_default();
            entry.total += 1;
            entry.replayed += usize::from(letter.replayed);
            *entry.by_reason.entry(letter.reason.clone()).or_default() += 1;
            let source = letter.source.as_ref().map_or("?", |s| s.topic.as_str());
            *entry.by_source.entry(source.to_owned()).or_default() += 1;
        }
        Ok(counts.into_values().collect())
    }

    /// The letters replayed already (`<topic>/<partition>/<offset>`).
    async fn replayed(&self) -> Result<BTreeSet<String>, PlanError> {
        Ok(read_topic(&self.brokers, &self.replayed_topic())
            .await?
            .iter()
            .filter(|m| m.payload().is_some())
            .filter_map(|m| m.key().map(|k| String::from_utf8_lossy(k).into_owned()))
            .collect())
    }

    /// Sends the letters `selection` takes back to their source topic and partition, exactly
    /// once each (see the module's comment); superseded letters only with `superseded`. With
    /// `dry_run`, only says what it would send.
    ///
    /// # Errors
    /// Kafka unreachable, a topic missing, or the transaction refused (nothing is sent then).
    pub async fn replay(
        &self,
        selection: &Selection,
        superseded: bool,
        dry_run: bool,
    ) -> Result<Replay, PlanError> {
        // Registered first, so a replay still running is fenced before the markers are read.
        let producer = if dry_run {
            None
        } else {
            Some(self.transactional_producer().await?)
        };
        let letters = self.letters(selection).await?;
        let mut outcome = Replay::default();
        let mut to_send = Vec::new();
        let later = self.later_keys(&letters).await?;
        for letter in letters {
            let Some(source) = letter.source.clone() else {
                outcome.no_source.push(letter.at.clone());
                continue;
            };
            if letter.replayed {
                outcome.already.push(letter.at.clone());
            } else if !superseded
                && letter.key.as_ref().is_some_and(|k| {
                    later
                        .get(&(source.topic.clone(), source.partition, k.clone()))
                        .is_some_and(|at| *at > source.offset)
                })
            {
                outcome.superseded.push(letter.at.clone());
            } else {
                to_send.push((letter, source));
            }
        }
        outcome.sent = to_send
            .iter()
            .map(|(l, s)| (l.at.clone(), s.clone()))
            .collect();
        if let Some(producer) = producer {
            let marker_topic = self.replayed_topic();
            tokio::task::spawn_blocking(move || send_back(&producer, &marker_topic, &to_send))
                .await
                .map_err(|e| PlanError::Kafka(e.to_string()))??;
        }
        Ok(outcome)
    }

    /// For each source partition of `letters`, the last offset of each key after the
    /// earliest letter's offset.
    async fn later_keys(
        &self,
        letters: &[Letter],
    ) -> Result<BTreeMap<(String, i32, Vec<u8>), i64>, PlanError> {
        let mut from: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for source in letters.iter().filter_map(|l| l.source.as_ref()) {
            let entry = from
                .entry((source.topic.clone(), source.partition))
                .or_insert(source.offset + 1);
            *entry = (*entry).min(source.offset + 1);
        }
        let partitions: Vec<(String, i32, i64)> =
            from.into_iter().map(|((t, p), o)| (t, p, o)).collect();
        let brokers = self.brokers.clone();
        tokio::task::spawn_blocking(move || {
            let mut last = BTreeMap::new();
            read_partitions_from(
                &crate::endpoints::kafka_client(&brokers),
                "clinic-dlq",
                &partitions,
                &Arc::new(Health::default()),
                |message| {
                    if let Some(key) = message.key() {
                        last.insert(
                            (
                                message.topic().to_owned(),
                                message.partition(),
                                key.to_vec(),
                            ),
                            message.offset(),
                        );
                    }
                    Ok(())
                },
            )
            .map_err(|e| PlanError::Kafka(e.to_string()))?;
            Ok(last)
        })
        .await
        .map_err(|e| PlanError::Kafka(e.to_string()))?
    }

    async fn transactional_producer(
        &self,
    ) -> Result<ThreadedProducer<DefaultProducerContext>, PlanError> {
        let client = crate::endpoints::kafka_client(&self.brokers)
            .set(
                "transactional.id",
                format!("{}clinic-dlq-replay", self.prefix),
            )
            .set("enable.idempotence", "true")
            .clone();
        tokio::task::spawn_blocking(move || {
            let producer: ThreadedProducer<DefaultProducerContext> = client
                .create()
                .map_err(|e| PlanError::Kafka(e.to_string()))?;
            producer
                .init_transactions(TIMEOUT)
                .map_err(|e| PlanError::Kafka(format!("registering the replay: {e}")))?;
            Ok(producer)
        })
        .await
        .map_err(|e| PlanError::Kafka(e.to_string()))?
    }
}

/// What a replay did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Replay {
    /// Letters sent back, and where to.
    pub sent: Vec<(Position, Position)>,
    /// Letters a replay had sent back already.
    pub already: Vec<Position>,
    /// Letters whose key has a later record in their source partition.
    pub superseded: Vec<Position>,
    /// Letters without a source (no error headers).
    pub no_source: Vec<Position>,
}

impl Replay {
    /// The outcome as text.
    pub fn render(&self, dry_run: bool) -> String {
        let mut text = String::new();
        let verb = if dry_run { "would send" } else { "sent" };
        for (letter, to) in &self.sent {
            text.push_str(&format!(
                "{verb} {letter} -> {}/{}\n",
                to.topic, to.partition
            ));
        }
        for letter in &self.superseded {
            text.push_str(&format!(
                "skipped {letter}: its key has a later record in the source partition (--include-superseded sends it)\n"
            ));
        }
        for letter in &self.no_source {
            text.push_str(&format!("skipped {letter}: no source in its headers\n"));
        }
        text.push_str(&format!(
            "{} {}, {} replayed before, {} superseded, {} without a source\n",
            verb,
            self.sent.len(),
            self.already.len(),
            self.superseded.len(),
            self.no_source.len()
        ));
        text
    }
}

/// One transaction: each letter to its source partition, and its marker.
fn send_back(
    producer: &ThreadedProducer<DefaultProducerContext>,
    marker_topic: &str,
    letters: &[(Letter, Position)],
) -> Result<(), PlanError> {
    let kafka =
        |what: &str, e: rdkafka::error::KafkaError| PlanError::Kafka(format!("{what}: {e}"));
    producer
        .begin_transaction()
        .map_err(|e| kafka("beginning the replay", e))?;
    let sent = (|| {
        for (letter, source) in letters {
            let of = letter.at.to_string();
            let mut headers = OwnedHeaders::new();
            for (name, value) in &letter.original_headers {
                if name != REPLAY_OF {
                    headers = headers.insert(Header {
                        key: name,
                        value: Some(value),
                    });
                }
            }
            headers = headers.insert(Header {
                key: REPLAY_OF,
                value: Some(&of),
            });
            let mut record = BaseRecord::<[u8], [u8]>::to(&source.topic)
                .partition(source.partition)
                .headers(headers);
            if let Some(key) = &letter.key {
                record = record.key(key);
            }
            if let Some(value) = &letter.value {
                record = record.payload(value);
            }
            producer
                .send(record)
                .map_err(|(e, _)| kafka("sending a letter back", e))?;
            let marker =
                serde_json::json!({ "to": source, "letter_reason": letter.reason }).to_string();
            producer
                .send(BaseRecord::to(marker_topic).key(&of).payload(&marker))
                .map_err(|(e, _)| kafka("marking a letter replayed", e))?;
        }
        producer
            .commit_transaction(TIMEOUT)
            .map_err(|e| kafka("committing the replay", e))
    })();
    if sent.is_err() {
        // Nothing of it is visible to read_committed readers; the next replay starts afresh.
        let _ = producer.abort_transaction(TIMEOUT);
    }
    sent
}

/// A topic read whole (read_committed).
async fn read_topic(brokers: &str, topic: &str) -> Result<Vec<OwnedMessage>, PlanError> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let client = crate::endpoints::kafka_client(&brokers);
        let consumer: BaseConsumer = client
            .create()
            .map_err(|e| PlanError::Kafka(e.to_string()))?;
        let metadata = consumer
            .fetch_metadata(Some(&topic), TIMEOUT)
            .map_err(|e| PlanError::Kafka(e.to_string()))?;
        let partitions = metadata
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map(|t| t.partitions().len())
            .ok_or_else(|| {
                PlanError::Refused(format!("no topic {topic} (clinic topics apply creates it)"))
            })?;
        let from: Vec<(String, i32, i64)> = (0..partitions)
            .filter_map(|p| Some((topic.clone(), i32::try_from(p).ok()?, 0)))
            .collect();
        let mut messages = Vec::new();
        read_partitions_from(
            &client,
            "clinic-dlq",
            &from,
            &Arc::new(Health::default()),
            |m| {
                messages.push(m.detach());
                Ok(())
            },
        )
        .map_err(|e| PlanError::Kafka(e.to_string()))?;
        Ok(messages)
    })
    .await
    .map_err(|e| PlanError::Kafka(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn message(topic: &str, offset: i64, pairs: &[(&str, &str)]) -> OwnedMessage {
        let mut list = OwnedHeaders::new();
        for (key, value) in pairs {
            list = list.insert(Header {
                key,
                value: Some(*value),
            });
        }
        OwnedMessage::new(
            Some(b"{\"name\":\"Jane\"}".to_vec()),
            Some(b"patient-1".to_vec()),
            topic.to_owned(),
            Timestamp::CreateTime(1_700_000_000_000),
            0,
            offset,
            Some(list),
        )
    }

    #[test]
    fn a_processors_letter_says_where_from_and_why_and_keeps_the_records_own_headers() {
        let letter = Letter::decode(
            &message(
                "qa1.permissions.dlq",
                7,
                &[
                    ("trace", "abc"),
                    (headers::TOPIC, "cdc.clinic.patients"),
                    (headers::PARTITION, "2"),
                    (headers::OFFSET, "41"),
                    (headers::CLASS, "poison"),
                    (headers::MESSAGE, "unknown schema id 99"),
                    (headers::PROCESSOR, "permissions"),
                ],
            ),
            "qa1.",
        );
        assert_eq!(
            letter.source,
            Some(Position {
                topic: "qa1.cdc.clinic.patients".into(),
                partition: 2,
                offset: 41
            })
        );
        assert_eq!(
            (letter.by.as_str(), letter.reason.as_str()),
            ("permissions", "poison")
        );
        assert_eq!(letter.original_headers, [("trace".into(), b"abc".to_vec())]);
        let hidden = letter.render(false);
        assert!(
            !hidden.contains("Jane") && !hidden.contains("patient-1") && !hidden.contains("99"),
            "{hidden}"
        );
        assert!(letter.render(true).contains("Jane"));
        assert!(letter.to_json(false).get("value").is_none());
    }

    #[test]
    fn a_connect_letter_is_read_from_its_context_headers() {
        let letter = Letter::decode(
            &message(
                "connect.sink.dlq",
                0,
                &[
                    ("__connect.errors.topic", "sink.clinic.patients"),
                    ("__connect.errors.partition", "0"),
                    ("__connect.errors.offset", "5"),
                    (
                        "__connect.errors.connector.name",
                        "mongo-sink-clinic-patients",
                    ),
                    ("__connect.errors.stage", "TASK_PUT"),
                    (
                        "__connect.errors.exception.class.name",
                        "com.mongodb.MongoBulkWriteException",
                    ),
                    (
                        "__connect.errors.exception.message",
                        "Could not convert value '{Jane' into a BsonDocument",
                    ),
                ],
            ),
            "qa1.",
        );
        assert_eq!(letter.source.as_ref().map(|s| s.offset), Some(5));
        assert_eq!(letter.reason, "com.mongodb.MongoBulkWriteException");
        assert_eq!(letter.stage.as_deref(), Some("TASK_PUT"));
        assert_eq!(
            letter.source.as_ref().map(|s| s.topic.as_str()),
            Some("sink.clinic.patients")
        );
        assert!(!letter.render(false).contains("Jane"));
        assert!(letter.to_json(false).to_string().find("Jane").is_none());
        assert!(
            letter
                .render(true)
                .contains("Could not convert value '{Jane'")
        );
        let selection = Selection {
            reason: Some("bulkwrite".into()),
            ..Selection::default()
        };
        assert!(selection.takes(&letter));
        let other = Selection {
            offsets: Some((1, 3)),
            ..Selection::default()
        };
        assert!(!other.takes(&letter));
    }
}
