//! A pass-through-and-count processor for exercising the Kafka runner end to end (the crash,
//! rebalance and benchmark runs in `tests/integration/runner.rs` and `benches/`).
//!
//! Reads JSON `{"k": <key>, "seq": <n>}` from `<prefix>in`, keeps a count per key in the store
//! `counts`, and emits `{"k", "seq", "count"}` to `<prefix>out`. A record with a negative `seq`
//! is poison. Settings from the environment: `CLINIC_KAFKA_BROKERS`, `COUNTER_PREFIX`,
//! `COUNTER_GUARANTEE` (`exactly_once` | `at_least_once`), `COUNTER_INSTANCE`,
//! `COUNTER_ADMIN_ADDR`, `COUNTER_PASS_THROUGH=1` (no store: the runtime's bare overhead),
//! `COUNTER_STATE_DIR` (the counts on disk there, `streams.state_dir`).

use clinic::streams::kafka::{Guarantee, StreamsSettings};
use clinic::streams::runner;
use clinic::streams::{
    Context, Input, InputFormat, OutValue, OutputRecord, Payload, ProcessError, Processor, Topology,
};

struct Counter {
    pass_through: bool,
    accept_negative: bool,
}

impl Processor for Counter {
    fn topology(&self) -> Topology {
        let topology = Topology::new("counter")
            .stream("in", InputFormat::Json)
            .output("out");
        if self.pass_through {
            topology
        } else {
            // On disk when COUNTER_STATE_DIR gives a state directory.
            topology.store("counts").persistent("counts")
        }
    }

    fn process(&mut self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let Payload::Json(Some(value)) = input.payload else {
            return Err(ProcessError::Poison("expected a JSON value".into()));
        };
        let key = value["k"]
            .as_str()
            .ok_or_else(|| ProcessError::Poison("no k".into()))?
            .to_owned();
        let seq = value["seq"]
            .as_i64()
            .ok_or_else(|| ProcessError::Poison("no seq".into()))?;
        if seq < 0 && !self.accept_negative {
            return Err(ProcessError::Poison(format!("negative seq {seq}")));
        }
        let count = if self.pass_through {
            0
        } else {
            let count = ctx.get_json::<u64>("counts", &key)?.unwrap_or(0) + 1;
            ctx.put_json("counts", &key, &count)?;
            count
        };
        ctx.emit(OutputRecord {
            topic: "out".into(),
            key: key.clone(),
            value: Some(OutValue::Json(
                serde_json::json!({ "k": key, "seq": seq, "count": count }),
            )),
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    clinic::telemetry::init();
    let env = |name: &str| std::env::var(name).ok();
    let config = StreamsSettings {
        brokers: env("CLINIC_KAFKA_BROKERS").unwrap_or_else(|| "127.0.0.1:9092".into()),
        topic_prefix: env("COUNTER_PREFIX").unwrap_or_default(),
        guarantee: match env("COUNTER_GUARANTEE").as_deref() {
            Some("at_least_once") => Guarantee::AtLeastOnce,
            _ => Guarantee::ExactlyOnce,
        },
        instance_id: env("COUNTER_INSTANCE").unwrap_or_else(|| "0".into()),
        admin_addr: env("COUNTER_ADMIN_ADDR").map(|a| a.parse()).transpose()?,
        state_dir: env("COUNTER_STATE_DIR").map(Into::into),
        ..StreamsSettings::default()
    };
    let pass_through = env("COUNTER_PASS_THROUGH").as_deref() == Some("1");
    let accept_negative = env("COUNTER_ACCEPT_NEGATIVE").as_deref() == Some("1");
    runner::run(config, move || Counter {
        pass_through,
        accept_negative,
    })
    .await
}
