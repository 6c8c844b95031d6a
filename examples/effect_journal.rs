//! An effect stage whose effect is appending the request's id to a journal file (synced before
//! the effect counts as done), for proving the stage's guarantee with SIGKILLs in
//! `tests/integration/effects.rs`: every request performed, and a crash repeating at most the
//! one in flight.
//!
//! Requests are JSON `{"n": <number>}`; `{"refuse": true}` fails permanently (dead-lettered);
//! `{"flaky": k}` fails transiently its first `k` attempts in this process. Settings from the
//! environment: `CLINIC_KAFKA_BROKERS`, `JOURNAL_PREFIX` (topics `<prefix>requests`,
//! `<prefix>journal.done`, `<prefix>journal.dlq`), `JOURNAL_FILE`, `JOURNAL_INSTANCE`.

use std::collections::HashMap;
use std::io::Write as _;

use clinic::streams::effect::{self, Effect, EffectError, Stage};
use clinic::streams::kafka::StreamsSettings;
use serde::Deserialize;

#[derive(Deserialize)]
struct Request {
    n: Option<u64>,
    #[serde(default)]
    refuse: bool,
    #[serde(default)]
    flaky: u32,
}

struct Journal {
    file: std::fs::File,
    attempts: HashMap<u64, u32>,
}

impl Effect for Journal {
    type Request = Request;

    async fn perform(&mut self, request: &Request) -> Result<(), EffectError> {
        if request.refuse {
            return Err(EffectError::Permanent("refused by request".into()));
        }
        let n = request.n.unwrap_or_default();
        let attempts = self.attempts.entry(n).or_default();
        *attempts += 1;
        if *attempts <= request.flaky {
            return Err(EffectError::Transient(format!("attempt {attempts} failed")));
        }
        writeln!(self.file, "{n}")
            .and_then(|()| self.file.sync_data())
            .map_err(|e| EffectError::Transient(e.to_string()))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    clinic::telemetry::init();
    let env = |name: &str| std::env::var(name).ok();
    let config = StreamsSettings {
        brokers: env("CLINIC_KAFKA_BROKERS").unwrap_or_else(|| "127.0.0.1:9092".into()),
        topic_prefix: env("JOURNAL_PREFIX").unwrap_or_default(),
        instance_id: env("JOURNAL_INSTANCE").unwrap_or_else(|| "0".into()),
        max_backoff: std::time::Duration::from_millis(200),
        ..StreamsSettings::default()
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env("JOURNAL_FILE").unwrap_or_else(|| "journal.txt".into()))?;
    let stage = Stage {
        name: "journal".into(),
        requests: "requests".into(),
        done: "journal.done".into(),
        dlq: "journal.dlq".into(),
    };
    let journal = Journal {
        file,
        attempts: HashMap::new(),
    };
    effect::run(config, stage, journal).await
}
