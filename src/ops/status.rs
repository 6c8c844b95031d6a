//! `clinic status`: one view of the whole suite, for a person on call or a probe. Whether the
//! dependencies answer (broker, registry, Connect, database, SMTP); each processor's admin
//! `/status` (ready, the partitions it holds and their lag, dead letters, its last error); each
//! connector and task (state, the first line of a failed task's trace) with its consumer
//! group's lag. Unhealthy: a dependency that does not answer, a processor that is unreachable or
//! not ready, a connector or task that is not RUNNING. Connectors: those of the deployment (named
//! under `CLINIC_TOPIC_PREFIX`, when set).
//!
//! Where the processors are: `CLINIC_PROCESSORS` (`name=url,…`, each the admin endpoint of one
//! instance), by default the demo's (`permissions=http://127.0.0.1:9101`, migrations 9102,
//! deletions 9103, notifications 9104).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::endpoints::Endpoints;
use crate::ops::PlanError;
use crate::ops::connectors::trace_summary;
use crate::streams::kafka::health::StatusDocument;
use crate::streams::kafka::read_partitions_from;

/// How long any one check waits.
const TIMEOUT: Duration = Duration::from_secs(3);

/// One dependency's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Dependency {
    /// Its name.
    pub name: &'static str,
    /// Where it was asked.
    pub address: String,
    /// Whether it answered.
    pub ok: bool,
    /// What it said, or why it did not.
    pub detail: String,
}

/// One processor instance's `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Processor {
    /// Its name in `CLINIC_PROCESSORS`.
    pub name: String,
    /// Its admin endpoint.
    pub url: String,
    /// Whether it answered and is ready.
    pub ready: bool,
    /// Why not, when it is not.
    pub problem: Option<String>,
    /// Assigned partitions, per input topic.
    pub partitions: BTreeMap<String, usize>,
    /// Lag per input topic (records; partitions not measured yet count 0).
    pub lag: BTreeMap<String, i64>,
    /// Records dead-lettered since it started.
    pub dead_letters: u64,
    /// Its last error, if any (seconds since the Unix epoch, message).
    pub last_error: Option<(u64, String)>,
}

/// One connector.
#[derive(Debug, Clone, Serialize)]
pub struct Connector {
    /// Its name.
    pub name: String,
    /// The connector's state.
    pub state: String,
    /// Each task's state, with a failed one's trace in a line (its first line and deepest
    /// cause).
    pub tasks: Vec<(i32, String, Option<String>)>,
    /// Its consumer group's lag (sink connectors), records.
    pub lag: Option<i64>,
}

/// The whole view.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Broker, registry, Connect, database, SMTP.
    pub dependencies: Vec<Dependency>,
    /// Each processor instance.
    pub processors: Vec<Processor>,
    /// Each connector Connect runs.
    pub connectors: Vec<Connector>,
    /// What is unhealthy, one line each; empty when all is well.
    pub problems: Vec<String>,
}

impl Status {
    /// The view as aligned text.
    pub fn render(&self) -> String {
        let mut text = String::from("dependencies\n");
        for d in &self.dependencies {
            // A driver's error can run to a paragraph; the JSON has it whole.
            let detail: String = d.detail.chars().take(100).collect();
            let more = if detail.len() < d.detail.len() {
                "…"
            } else {
                ""
            };
            text.push_str(&format!(
                "  {:<10} {:<4} {:<45} {detail}{more}\n",
                d.name,
                if d.ok { "ok" } else { "DOWN" },
                d.address,
            ));
        }
        text.push_str("processors\n");
        for p in &self.processors {
            let lag: i64 = p.lag.values().sum();
            let partitions: usize = p.partitions.values().sum();
            text.push_str(&format!(
                "  {:<14} {:<9} {partitions} partitions, lag {lag}, {} dead letters{}{}\n",
                p.name,
                if p.ready { "ready" } else { "NOT READY" },
                p.dead_letters,
                p.problem
                    .as_ref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default(),
                p.last_error
                    .as_ref()
                    .map(|(_, m)| format!("; last error: {m}"))
                    .unwrap_or_default()
            ));
        }
        text.push_str("connectors\n");
        for c in &self.connectors {
            let running = c.tasks.iter().filter(|(_, s, _)| s == "RUNNING").count();
            text.push_str(&format!(
                "  {:<48} {:<8} tasks {running}/{} running{}\n",
                c.name,
                c.state,
                c.tasks.len(),
                c.lag.map(|l| format!(", lag {l}")).unwrap_or_default()
            ));
            for (id, state, trace) in &c.tasks {
                if let Some(trace) = trace {
                    text.push_str(&format!("    task {id} {state}: {trace}\n"));
                }
            }
        }
        if self.problems.is_empty() {
            text.push_str("healthy\n");
        } else {
            text.push_str(&format!("UNHEALTHY: {}\n", self.problems.join("; ")));
        }
        text
    }
}

/// The processors to ask: `CLINIC_PROCESSORS`, else the demo's admin endpoints.
pub fn processors_from_env() -> Vec<(String, String)> {
    let list = std::env::var("CLINIC_PROCESSORS").unwrap_or_else(|_| {
        "permissions=http://127.0.0.1:9101,migrations=http://127.0.0.1:9102,deletions=http://127.0.0.1:9103,notifications=http://127.0.0.1:9104".into()
    });
    list.split(',')
        .filter_map(|entry| {
            let (name, url) = entry.split_once('=')?;
            Some((
                name.trim().to_owned(),
                url.trim().trim_end_matches('/').to_owned(),
            ))
        })
        .collect()
}

/// Asks everything.
pub async fn status(endpoints: &Endpoints, processors: &[(String, String)]) -> Status {
    let http = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .expect("BUG: a plain HTTP client builds");
    let dependencies = vec![
        broker(endpoints).await,
        http_dependency(
            &http,
            "registry",
            format!("{}/subjects", endpoints.schema_registry_url()),
        )
        .await,
        http_dependency(&http, "connect", format!("{}/", endpoints.connect_url)).await,
        database(endpoints).await,
        smtp(endpoints).await,
    ];
    let mut checked = Vec::new();
    for (name, url) in processors {
        checked.push(processor(&http, name, url).await);
    }
    let connectors = connectors(endpoints).await;
    let mut problems: Vec<String> = dependencies
        .iter()
        .filter(|d| !d.ok)
        .map(|d| format!("{} does not answer", d.name))
        .collect();
    problems.extend(
        checked
            .iter()
            .filter(|p| !p.ready)
            .map(|p| format!("processor {} is not ready", p.name)),
    );
    match &connectors {
        Ok(connectors) => problems.extend(connectors.iter().filter_map(|c| {
            let failed = c.state != "RUNNING" || c.tasks.iter().any(|(_, s, _)| s != "RUNNING");
            failed.then(|| format!("connector {} is not running", c.name))
        })),
        Err(error) => problems.push(format!("connectors unknown: {error}")),
    }
    Status {
        dependencies,
        processors: checked,
        connectors: connectors.unwrap_or_default(),
        problems,
    }
}

async fn broker(endpoints: &Endpoints) -> Dependency {
    let brokers = endpoints.kafka_brokers.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = crate::endpoints::kafka_client(&brokers)
            .create()
            .map_err(|e| e.to_string())?;
        let metadata = consumer
            .fetch_metadata(None, TIMEOUT)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(format!(
            "{} brokers, {} topics",
            metadata.brokers().len(),
            metadata.topics().len()
        ))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    dependency("broker", endpoints.kafka_brokers.clone(), answer)
}

async fn http_dependency(http: &reqwest::Client, name: &'static str, url: String) -> Dependency {
    let answer = match http.get(&url).send().await {
        Ok(response) if response.status().is_success() => Ok(format!("HTTP {}", response.status())),
        Ok(response) => Err(format!("HTTP {}", response.status())),
        Err(error) => Err(error.to_string()),
    };
    dependency(name, url, answer)
}

async fn database(endpoints: &Endpoints) -> Dependency {
    let answer = async {
        let mut options = mongodb::options::ClientOptions::parse(&endpoints.mongo_uri)
            .await
            .map_err(|e| e.to_string())?;
        options.server_selection_timeout = Some(TIMEOUT);
        options.connect_timeout = Some(TIMEOUT);
        let client = mongodb::Client::with_options(options).map_err(|e| e.to_string())?;
        client
            .database("admin")
            .run_command(bson::doc! { "ping": 1 })
            .await
            .map_err(|e| e.to_string())?;
        Ok("ping answered".to_owned())
    }
    .await;
    // The URI can hold a password: only its hosts are shown.
    let address = endpoints
        .mongo_uri
        .rsplit_once('@')
        .map_or(endpoints.mongo_uri.as_str(), |(_, hosts)| hosts)
        .to_owned();
    dependency("database", address, answer)
}

async fn smtp(endpoints: &Endpoints) -> Dependency {
    use tokio::io::AsyncReadExt as _;
    let address = format!("{}:{}", endpoints.smtp_host, endpoints.smtp_port);
    let answer = async {
        let mut stream = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(&address))
            .await
            .map_err(|_| "no answer".to_owned())?
            .map_err(|e| e.to_string())?;
        let mut greeting = [0u8; 256];
        let read = tokio::time::timeout(TIMEOUT, stream.read(&mut greeting))
            .await
            .map_err(|_| "no greeting".to_owned())?
            .map_err(|e| e.to_string())?;
        let greeting = String::from_utf8_lossy(&greeting[..read]);
        if greeting.starts_with("220") {
            Ok("greeted (220)".to_owned())
        } else {
            Err(format!(
                "greeted with {:?}",
                greeting.lines().next().unwrap_or("")
            ))
        }
    }
    .await;
    dependency("smtp", address, answer)
}

fn dependency(name: &'static str, address: String, answer: Result<String, String>) -> Dependency {
    let (ok, detail) = match answer {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    Dependency {
        name,
        address,
        ok,
        detail,
    }
}

async fn processor(http: &reqwest::Client, name: &str, url: &str) -> Processor {
    let answer: Result<StatusDocument, String> = async {
        http.get(format!("{url}/status"))
            .send()
            .await
            .map_err(|e| format!("unreachable: {e}"))?
            .json()
            .await
            .map_err(|e| format!("not a status: {e}"))
    }
    .await;
    let (status, problem) = match answer {
        Ok(status) => {
            let problem = match status.outages.first() {
                Some(away) => Some(format!(
                    "waiting for the {} for {} s",
                    away.dependency, away.away_seconds
                )),
                None => (!status.ready).then(|| "restoring".to_owned()),
            };
            (status, problem)
        }
        Err(problem) => (StatusDocument::default(), Some(problem)),
    };
    let work = status.work;
    Processor {
        name: name.to_owned(),
        url: url.to_owned(),
        ready: status.ready,
        problem,
        partitions: work
            .assigned
            .iter()
            .map(|(topic, partitions)| (topic.clone(), partitions.len()))
            .collect(),
        lag: work
            .assigned
            .iter()
            .map(|(topic, partitions)| (topic.clone(), partitions.values().flatten().sum()))
            .collect(),
        dead_letters: work.dead_letters,
        last_error: work.last_error,
    }
}

async fn connectors(endpoints: &Endpoints) -> Result<Vec<Connector>, PlanError> {
    let connect = crate::ops::connectors::Connect::new(&endpoints.connect_url);
    let mut connectors = Vec::new();
    let prefix = crate::endpoints::topic_prefix().unwrap_or_default();
    for (status, topics) in connect.overview().await? {
        if !status.name.starts_with(&prefix) {
            continue;
        }
        let lag = if topics.is_empty() {
            None
        } else {
            let group = format!("connect-{}", status.name);
            group_lag(&endpoints.kafka_brokers, &group, &topics).await
        };
        let tasks = status
            .tasks
            .into_iter()
            .map(|task| {
                let trace = task.trace.as_deref().map(trace_summary);
                (task.id, task.state, trace)
            })
            .collect();
        connectors.push(Connector {
            name: status.name,
            state: status.connector.state,
            tasks,
            lag,
        });
    }
    Ok(connectors)
}

/// A consumer group's lag over `topics` (its committed offsets against the ends), read without
/// joining the group. The sink topics are written in transactions, so the offsets past a
/// group's position include commit markers that are not records: where the difference is small
/// (at most [`EXACT_BELOW`] offsets) the records left are counted by reading them
/// (`read_committed`, as the sink connectors read), else the difference is the figure.
async fn group_lag(brokers: &str, group: &str, topics: &[String]) -> Option<i64> {
    let (brokers, group, topics) = (brokers.to_owned(), group.to_owned(), topics.to_vec());
    tokio::task::spawn_blocking(move || {
        let client = crate::endpoints::kafka_client(&brokers);
        let consumer: BaseConsumer = client.clone().set("group.id", &group).create().ok()?;
        let mut list = TopicPartitionList::new();
        for topic in &topics {
            let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT).ok()?;
            for partition in metadata.topics().first()?.partitions() {
                list.add_partition(topic, partition.id());
            }
        }
        let committed = consumer.committed_offsets(list, TIMEOUT).ok()?;
        let mut lag = 0;
        let mut to_count = Vec::new();
        for element in committed.elements() {
            let (low, high) = consumer
                .fetch_watermarks(element.topic(), element.partition(), TIMEOUT)
                .ok()?;
            let at = match element.offset() {
                Offset::Offset(at) => at,
                _ => low,
            };
            match high - at {
                difference if difference <= 0 => {}
                difference if difference <= EXACT_BELOW => {
                    to_count.push((element.topic().to_owned(), element.partition(), at));
                }
                difference => lag += difference,
            }
        }
        let health = std::sync::Arc::new(crate::streams::kafka::Health::default());
        let counted = read_partitions_from(&client, &group, &to_count, &health, |_| Ok(())).ok()?;
        Some(lag + i64::try_from(counted).ok()?)
    })
    .await
    .ok()
    .flatten()
}

/// Below this many offsets, a group's lag on a partition is counted record by record.
const EXACT_BELOW: i64 = 64;
