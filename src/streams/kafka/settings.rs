//! The `[streams]` settings every processor binary shares: where Kafka and the registry are, the
//! guarantee, commit and outage timing, and the librdkafka passthrough. The runner, the global
//! tables' thread and the effect stage all read them through [`super::Kafka`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::InvalidSetting;

/// Processing guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Outputs, changelog writes and input offsets in one Kafka transaction per commit interval;
    /// downstream consumers read `read_committed`.
    ExactlyOnce,
    /// Input offsets are committed only after every output of the interval was delivered;
    /// a crash can repeat the records since the last commit.
    AtLeastOnce,
}

/// How the runtime consumes, produces and commits (`[streams]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsSettings {
    /// Kafka bootstrap servers (default: `CLINIC_KAFKA_BROKERS`, as every binary reads it).
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Schema registry, Confluent-compatible API (e.g. `http://registry:8081/apis/ccompat/v7`;
    /// default: `CLINIC_REGISTRY_API_URL`, else Apicurio's under `CLINIC_REGISTRY_URL`).
    #[serde(default = "default_registry")]
    pub schema_registry_url: String,
    /// Processing guarantee.
    #[serde(default = "default_guarantee")]
    pub guarantee: Guarantee,
    /// How often to commit (a transaction, or offsets after delivery).
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
    /// This instance's stable name; with exactly-once it makes the transactional id
    /// `<prefix>clinic-<processor>-<instance_id>` (also the static group member id), so a restarted instance fences its predecessor at once
    /// instead of leaving its open transaction to time out. Defaults to the host name.
    #[serde(default = "default_instance_id")]
    pub instance_id: String,
    /// Prefix in front of every topic name (Tidepool deployments use `<namespace>.`).
    #[serde(default)]
    pub topic_prefix: String,
    /// Kafka Streams' `application.id`: the consumer group, the transactional id's stem and the
    /// changelog topics' stem (`<application_id>.<store>.changelog`, which must exist). Unset:
    /// `clinic-<processor>` and `<processor>.<store>.changelog`. A new id reprocesses the inputs
    /// from the beginning with empty state; use it for a deliberate replay.
    #[serde(default)]
    pub application_id: Option<String>,
    /// Address of the admin endpoint (`/healthz`, `/readyz`, `/metrics`); `None` serves none.
    #[serde(default = "default_admin_addr")]
    pub admin_addr: Option<SocketAddr>,
    /// How long SIGTERM may take to finish the current commit before the process exits anyway.
    #[serde(default = "default_shutdown_deadline", with = "humantime_serde")]
    pub shutdown_deadline: Duration,
    /// Longest wait between retries of a transient failure (broker or registry unavailable).
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How long the broker or the schema registry may be unavailable before the processor gives
    /// up and exits non-zero (to be restarted, visibly). Shorter outages are waited out: nothing
    /// is dead-lettered, nothing lost, `/readyz` answers 503 meanwhile.
    #[serde(default = "default_max_outage", with = "humantime_serde")]
    pub max_outage: Duration,
    /// Where stores that may outgrow memory live (a directory the instance keeps across
    /// restarts, such as a StatefulSet's volume): one fjall database, holding each such store of
    /// each task and the changelog offset it reflects, so a restart replays only the changelog's
    /// tail. Unset: every store in memory, restored whole at every start.
    #[serde(default)]
    pub state_dir: Option<std::path::PathBuf>,
    /// Per store, `memory` or `disk`, in place of what the processor's topology says (a store
    /// it marks persistent lives on disk when `state_dir` is set). `disk` needs `state_dir`.
    #[serde(default)]
    pub stores: BTreeMap<String, crate::streams::topology::StoreKind>,
    /// librdkafka properties passed through to the consumer and the producer (`fetch.min.bytes`,
    /// or `fetch_min_bytes` where dots cannot be written, as in environment variables).
    #[serde(default, deserialize_with = "crate::settings::string_map")]
    pub librdkafka: BTreeMap<String, String>,
}

// One variable names each address for every binary (`crate::endpoints`); the settings override.
fn default_brokers() -> String {
    crate::endpoints::kafka_brokers()
}
fn default_registry() -> String {
    crate::endpoints::registry_api_url()
}
fn default_guarantee() -> Guarantee {
    Guarantee::ExactlyOnce
}
fn default_commit_interval() -> Duration {
    Duration::from_millis(100)
}
fn default_instance_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "0".into())
}
fn default_admin_addr() -> Option<SocketAddr> {
    Some(SocketAddr::from(([0, 0, 0, 0], 9100)))
}
fn default_shutdown_deadline() -> Duration {
    Duration::from_secs(20)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(10)
}
fn default_max_outage() -> Duration {
    Duration::from_secs(300)
}

impl Default for StreamsSettings {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            schema_registry_url: default_registry(),
            guarantee: default_guarantee(),
            commit_interval: default_commit_interval(),
            instance_id: default_instance_id(),
            topic_prefix: String::new(),
            application_id: None,
            admin_addr: default_admin_addr(),
            state_dir: None,
            stores: BTreeMap::new(),
            shutdown_deadline: default_shutdown_deadline(),
            max_backoff: default_max_backoff(),
            max_outage: default_max_outage(),
            librdkafka: BTreeMap::new(),
        }
    }
}

impl StreamsSettings {
    /// The librdkafka settings every client of a deployment shares: the brokers and
    /// `streams.librdkafka` (`fetch_min_bytes` from the environment means `fetch.min.bytes`, see
    /// `settings`).
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut client = rdkafka::ClientConfig::new();
        client.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.librdkafka {
            client.set(key.replace('_', "."), value);
        }
        client
    }

    /// [`Self::client_config`] with the runtime's consumer defaults, each unless
    /// `streams.librdkafka` sets it. librdkafka prefetches up to 64 MiB per consumer by default
    /// (`queued.max.messages.kbytes`) in fetches of up to 1 MiB per partition
    /// (`max.partition.fetch.bytes`), the largest share of a processor's memory; and once its
    /// queue is full it waits a second before fetching again (`fetch.queue.backoff.ms`), which
    /// with a small queue starves the runner. A 2 MiB queue (~7,000 CDC events) filled in
    /// 256 KiB fetches and refilled at once keeps a processor as busy at half the memory
    /// (`docs/processors.md`, "Throughput and memory"). A record larger than a fetch is still
    /// fetched whole. A broker holds a fetch of partitions with nothing new for up to
    /// `fetch.wait.max.ms` (500 ms by default); a consumer's first fetch can go out before the
    /// partitions with records have their start offsets, and then waits that long on empty ones
    /// (deletions' first output came 0.85 s after its start, 0.45 s with 100 ms).
    pub fn consumer_config(&self) -> rdkafka::ClientConfig {
        let mut client = self.client_config();
        for (key, value) in [
            ("queued.max.messages.kbytes", "2048"),
            ("max.partition.fetch.bytes", "262144"),
            ("fetch.queue.backoff.ms", "5"),
            ("fetch.wait.max.ms", "100"),
        ] {
            if client.get(key).is_none() {
                client.set(key, value);
            }
        }
        client
    }

    /// Checks what can be checked before any connection opens.
    ///
    /// # Errors
    /// The first bad setting.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.brokers.trim().is_empty() {
            return Err(InvalidSetting::new("streams.brokers", "is empty"));
        }
        if self.commit_interval.is_zero() {
            return Err(InvalidSetting::new(
                "streams.commit_interval",
                "must be positive",
            ));
        }
        if self.max_outage.is_zero() || self.max_backoff.is_zero() {
            return Err(InvalidSetting::new(
                "streams.max_outage, streams.max_backoff",
                "must be positive",
            ));
        }
        if self.instance_id.is_empty() || self.instance_id.contains(char::is_whitespace) {
            return Err(InvalidSetting::new(
                "streams.instance_id",
                format!("{:?} must be a non-empty word", self.instance_id),
            ));
        }
        if let Some(id) = &self.application_id
            && (id.is_empty()
                || id.contains(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c))))
        {
            return Err(InvalidSetting::new(
                "streams.application_id",
                format!("{id:?} must be a non-empty topic-name word ([A-Za-z0-9._-])"),
            ));
        }
        if self.state_dir.is_none()
            && let Some((store, _)) = self
                .stores
                .iter()
                .find(|(_, kind)| **kind == crate::streams::topology::StoreKind::Disk)
        {
            return Err(InvalidSetting::new(
                format!("streams.stores.{store}"),
                "is disk, but streams.state_dir is not set",
            ));
        }
        for key in [
            "transactional.id",
            "group.id",
            "enable.auto.commit",
            "isolation.level",
        ] {
            // Spelt with underscores from the environment (see `client_config`).
            if self.librdkafka.keys().any(|k| k.replace('_', ".") == key) {
                return Err(InvalidSetting::new(
                    format!("streams.librdkafka.{key}"),
                    "is set by the runtime and cannot be overridden",
                ));
            }
        }
        Ok(())
    }
}
