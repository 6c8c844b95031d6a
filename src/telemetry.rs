//! Logging for every binary of the suite: `tracing` to stderr, filtered by `RUST_LOG` (default
//! `info`), as text or as one JSON object per line (`CLINIC_LOG_FORMAT=json`, for log
//! shippers). Colour codes only when stderr is a terminal, so log files stay plain text.
//!
//! Logs never carry record content above DEBUG: the suite's own lines name topic, partition and
//! offset instead, and `apache_avro`'s log lines are switched off whatever `RUST_LOG` says,
//! because its schema validation logs the whole value it rejects at ERROR (a poison patient
//! record would put a name, birth date and MRN in the logs). librdkafka's own lines arrive at
//! DEBUG (`streams::kafka::client` says what they mean, once).
//!
//! Metrics: the process-wide Prometheus recorder ([`prometheus`]) that the processors' admin
//! endpoint and the API's `/metrics` render.

use std::io::IsTerminal as _;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

/// The environment variable that selects the log format: `text` (default) or `json`.
pub const FORMAT_VAR: &str = "CLINIC_LOG_FORMAT";

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Format {
    /// The format `CLINIC_LOG_FORMAT` names.
    ///
    /// # Errors
    /// A value other than `text` or `json`.
    pub fn from_env() -> Result<Self, crate::settings::InvalidSetting> {
        match std::env::var(FORMAT_VAR).ok().as_deref() {
            None | Some("" | "text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(crate::settings::InvalidSetting::new(
                FORMAT_VAR,
                format!("{other:?} is neither text nor json"),
            )),
        }
    }
}

/// The filter: `RUST_LOG` (default `info`), with `apache_avro` always off, and rust-rdkafka's
/// consumer module too: its only lines are an ERROR when a consumer that librdkafka already
/// failed fatally is dropped (the runner says why it restarts, once) and WARNs about events it
/// ignores.
fn filter() -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    ["apache_avro=off", "rdkafka::consumer::base_consumer=off"]
        .into_iter()
        .fold(filter, |filter, directive| {
            filter.add_directive(
                directive
                    .parse::<Directive>()
                    .expect("BUG: a constant directive parses"),
            )
        })
}

/// Installs the global subscriber. Call once, first thing in `main`. An unknown
/// `CLINIC_LOG_FORMAT` falls back to text and says so.
pub fn init() {
    let (format, problem) = match Format::from_env() {
        Ok(format) => (format, None),
        Err(problem) => (Format::Text, Some(problem)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    match format {
        Format::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        Format::Json => builder.json().with_current_span(false).init(),
    }
    if let Some(problem) = problem {
        tracing::warn!(problem = %problem, "Unknown log format; logging text.");
    }
}

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often the recorder folds the histogram samples recorded since into its summaries.
const UPKEEP: Duration = Duration::from_secs(1);

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    RECORDER.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (tests); then this handle records nothing,
        // which only matters for what /metrics shows in that process.
        let _ = metrics::set_global_recorder(recorder);
        // A recorder built this way keeps every histogram sample until a scrape folds them
        // (only the exporter's own `install` runs its upkeep): a processor nobody scraped grew
        // by ~13 bytes per record, its process-latency samples (`docs/operators.md`).
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP);
                    upkeep.run_upkeep();
                }
            })
            .expect("BUG: a thread starts at start-up");
        handle
    })
}
