//! `connectors/`: one Kafka Connect connector per JSON file (file stem = connector name), as
//! desired state against the Connect REST API. Values may use Connect's config providers
//! (`${env:…}`, `${file:…}`); they are compared and sent as written, and Connect resolves them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::PlanError;

/// A connector as the files want it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredConnector {
    /// Name (the file stem).
    pub name: String,
    /// Its config.
    pub config: BTreeMap<String, String>,
}

impl DesiredConnector {
    /// The connector reading a deployment's topics: `prefix` in front of every topic of `topics`
    /// and of the dead-letter topic (`errors.deadletterqueue.topic.name`), as the processors
    /// put `streams.topic_prefix` in front of theirs. The name stays the file stem (see
    /// [`DesiredConnector::of_deployment`]).
    #[must_use]
    pub fn with_topic_prefix(mut self, prefix: &str) -> Self {
        for key in ["topics", "errors.deadletterqueue.topic.name"] {
            if let Some(value) = self.config.get_mut(key) {
                *value = value
                    .split(',')
                    .map(|topic| format!("{prefix}{}", topic.trim()))
                    .collect::<Vec<_>>()
                    .join(",");
            }
        }
        self
    }

    /// The connector of the deployment whose topics have `prefix`: its topics prefixed
    /// ([`DesiredConnector::with_topic_prefix`]) and its name too, so deployments sharing one
    /// Connect cluster (`qa1.`, `qa2.`) keep apart.
    #[must_use]
    pub fn of_deployment(self, prefix: &str) -> Self {
        let mut connector = self.with_topic_prefix(prefix);
        connector.name = format!("{prefix}{}", connector.name);
        connector
    }
}

/// Which connectors that no file describes a plan deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prune<'a> {
    /// None.
    Nothing,
    /// Those whose names start with this (the deployment's prefix; `""`: every connector).
    Under(&'a str),
}

/// Reads every `*.json` in `dir`.
///
/// # Errors
/// Unreadable files, invalid JSON, non-string values, a missing `connector.class`.
pub fn desired(dir: &Path) -> Result<Vec<DesiredConnector>, PlanError> {
    let listing = std::fs::read_dir(dir).map_err(|e| PlanError::File {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let mut connectors = Vec::new();
    for entry in listing {
        let path = entry
            .map_err(|e| PlanError::File {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?
            .path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let error = |message: String| PlanError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| error(e.to_string()))?;
        let raw: BTreeMap<String, Value> =
            serde_json::from_str(&text).map_err(|e| error(e.to_string()))?;
        let mut config = BTreeMap::new();
        for (key, value) in raw {
            let value = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(error(format!(
                        "{key}: Connect configs are strings, found {other}"
                    )));
                }
            };
            config.insert(key, value);
        }
        if !config.contains_key("connector.class") {
            return Err(error("no connector.class".into()));
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        if config.get("name").is_some_and(|n| *n != name) {
            return Err(error(format!("its name must be the file stem, {name:?}")));
        }
        config.remove("name");
        connectors.push(DesiredConnector { name, config });
    }
    connectors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(connectors)
}

/// One step of a connectors plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ConnectorAction {
    /// Create a missing connector.
    Create {
        /// Name.
        name: String,
        /// Config.
        config: BTreeMap<String, String>,
    },
    /// Replace a connector's config.
    Update {
        /// Name.
        name: String,
        /// `(key, current, desired)` per differing key; `None` for absent.
        changes: Vec<(String, Option<String>, Option<String>)>,
        /// The full desired config.
        #[serde(skip)]
        config: BTreeMap<String, String>,
    },
    /// Delete a connector no file describes (only with `--prune`).
    Delete {
        /// Name.
        name: String,
    },
}

/// The steps that bring Connect to the files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConnectorsPlan {
    /// The steps.
    pub actions: Vec<ConnectorAction>,
}

/// A connector's state and its tasks', with the trace of a failed one.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Status {
    /// Name.
    pub name: String,
    /// The connector itself.
    pub connector: State,
    /// Its tasks.
    pub tasks: Vec<TaskState>,
}

/// `RUNNING`, `FAILED`, `PAUSED`, `UNASSIGNED`, …
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct State {
    /// The state.
    pub state: String,
    /// The failure's stack trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// A task's state.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TaskState {
    /// Task id.
    pub id: i32,
    /// The state.
    pub state: String,
    /// The failure's stack trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// A failure's trace in one line: its first line and, when there is one, its deepest cause
/// (`Exiting WorkerSinkTask due to unrecoverable exception` says little; the cause says why).
pub fn trace_summary(trace: &str) -> String {
    let first = trace.lines().next().unwrap_or("").trim();
    match trace
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("Caused by: "))
    {
        Some(cause) => format!("{first} (caused by {cause})"),
        None => first.to_owned(),
    }
}

/// One field's validation errors, from the plugin's validate endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldErrors {
    /// Config key.
    pub field: String,
    /// Messages.
    pub errors: Vec<String>,
}

/// The Connect REST API.
pub struct Connect {
    url: String,
    http: reqwest::Client,
}

impl Connect {
    /// Connect at `url` (e.g. `http://127.0.0.1:8083`).
    pub fn new(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// One REST call. While the worker group rebalances, Connect answers 409 (or 500 "a
    /// rebalance is expected"); those are retried with backoff for up to a minute.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Option<Value>, PlanError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut delay = std::time::Duration::from_millis(200);
        loop {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.url));
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|e| PlanError::Kafka(format!("Kafka Connect: {e}")))?;
            let status = response.status();
            if status == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let text = response.text().await.unwrap_or_default();
            if status.is_success() {
                return Ok(Some(if text.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).unwrap_or(Value::Null)
                }));
            }
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            let rebalancing =
                status == reqwest::StatusCode::CONFLICT || message.contains("rebalance");
            if !rebalancing || std::time::Instant::now() >= deadline {
                return Err(PlanError::Kafka(format!(
                    "Kafka Connect answered {status}: {message}"
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(5));
        }
    }

    /// Names of the connectors Connect runs.
    ///
    /// # Errors
    /// Connect unreachable.
    pub async fn list(&self) -> Result<Vec<String>, PlanError> {
        let names = self
            .call(reqwest::Method::GET, "/connectors", None::<&()>)
            .await?
            .unwrap_or_default();
        Ok(serde_json::from_value(names).unwrap_or_default())
    }

    /// Compares the files with Connect; with `prune`, connectors no file describes are deleted.
    ///
    /// # Errors
    /// Connect unreachable.
    pub async fn plan(
        &self,
        desired: &[DesiredConnector],
        prune: Prune<'_>,
    ) -> Result<ConnectorsPlan, PlanError> {
        let mut actions = Vec::new();
        for want in desired {
            let current = self
                .call(
                    reqwest::Method::GET,
                    &format!("/connectors/{}/config", want.name),
                    None::<&()>,
                )
                .await?;
            let Some(current) = current else {
                actions.push(ConnectorAction::Create {
                    name: want.name.clone(),
                    config: want.config.clone(),
                });
                continue;
            };
            let mut have: BTreeMap<String, String> =
                serde_json::from_value(current).unwrap_or_default();
            have.remove("name");
            let keys: std::collections::BTreeSet<&String> =
                have.keys().chain(want.config.keys()).collect();
            let changes: Vec<_> = keys
                .into_iter()
                .filter(|k| have.get(*k) != want.config.get(*k))
                .map(|k| {
                    (
                        (*k).clone(),
                        have.get(k).cloned(),
                        want.config.get(k).cloned(),
                    )
                })
                .collect();
            if !changes.is_empty() {
                actions.push(ConnectorAction::Update {
                    name: want.name.clone(),
                    changes,
                    config: want.config.clone(),
                });
            }
        }
        if let Prune::Under(prefix) = prune {
            for name in self.list().await? {
                if name.starts_with(prefix) && !desired.iter().any(|d| d.name == name) {
                    actions.push(ConnectorAction::Delete { name });
                }
            }
        }
        Ok(ConnectorsPlan { actions })
    }

    /// Applies the plan with idempotent PUTs (and DELETEs for pruned connectors).
    ///
    /// # Errors
    /// The first step Connect refuses.
    pub async fn apply(
        &self,
        plan: &ConnectorsPlan,
        mut progress: impl FnMut(&ConnectorAction),
    ) -> Result<(), PlanError> {
        for action in &plan.actions {
            progress(action);
            match action {
                ConnectorAction::Create { name, config }
                | ConnectorAction::Update { name, config, .. } => {
                    self.call(
                        reqwest::Method::PUT,
                        &format!("/connectors/{name}/config"),
                        Some(config),
                    )
                    .await?;
                }
                ConnectorAction::Delete { name } => self.delete(name).await?,
            }
        }
        Ok(())
    }

    /// The connector's status; `None` when Connect does not know it.
    ///
    /// # Errors
    /// Connect unreachable.
    pub async fn status(&self, name: &str) -> Result<Option<Status>, PlanError> {
        let status = self
            .call(
                reqwest::Method::GET,
                &format!("/connectors/{name}/status"),
                None::<&()>,
            )
            .await?;
        Ok(status.and_then(|s| serde_json::from_value(s).ok()))
    }

    /// Every connector's status, with the topics a sink connector reads (empty for a source),
    /// in one call.
    ///
    /// # Errors
    /// Connect unreachable.
    pub async fn overview(&self) -> Result<Vec<(Status, Vec<String>)>, PlanError> {
        let listed = self
            .call(
                reqwest::Method::GET,
                "/connectors?expand=status&expand=info",
                None::<&()>,
            )
            .await?
            .unwrap_or_default();
        let mut connectors = Vec::new();
        for (name, entry) in listed.as_object().into_iter().flatten() {
            let status: Status = serde_json::from_value(entry["status"].clone()).map_err(|e| {
                PlanError::Kafka(format!(
                    "Kafka Connect's status of {name} is unreadable: {e}"
                ))
            })?;
            let topics = entry["info"]["config"]["topics"]
                .as_str()
                .map(|t| t.split(',').map(|t| t.trim().to_owned()).collect())
                .unwrap_or_default();
            connectors.push((status, topics));
        }
        connectors.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(connectors)
    }

    /// Restarts one task of the connector.
    ///
    /// # Errors
    /// Connect refuses or is unreachable.
    pub async fn restart_task(&self, name: &str, task: i32) -> Result<(), PlanError> {
        self.call(
            reqwest::Method::POST,
            &format!("/connectors/{name}/tasks/{task}/restart"),
            None::<&()>,
        )
        .await?
        .ok_or_else(|| PlanError::Refused(format!("no task {task} of connector {name}")))?;
        Ok(())
    }

    /// Restarts the connector and its failed tasks.
    ///
    /// # Errors
    /// Connect refuses or is unreachable.
    pub async fn restart(&self, name: &str) -> Result<(), PlanError> {
        self.call(
            reqwest::Method::POST,
            &format!("/connectors/{name}/restart?includeTasks=true&onlyFailed=true"),
            None::<&()>,
        )
        .await?
        .ok_or_else(|| PlanError::Refused(format!("no connector {name}")))?;
        Ok(())
    }

    /// Deletes the connector.
    ///
    /// # Errors
    /// Connect refuses or is unreachable.
    pub async fn delete(&self, name: &str) -> Result<(), PlanError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/connectors/{name}"),
            None::<&()>,
        )
        .await?;
        Ok(())
    }

    /// Validates a config with its plugin's validate endpoint; the fields with errors.
    ///
    /// # Errors
    /// Connect unreachable, or no such plugin.
    pub async fn validate(
        &self,
        connector: &DesiredConnector,
    ) -> Result<Vec<FieldErrors>, PlanError> {
        let class = &connector.config["connector.class"];
        let plugin = class.rsplit('.').next().unwrap_or(class);
        let mut config = connector.config.clone();
        config.insert("name".into(), connector.name.clone());
        let answer = self
            .call(
                reqwest::Method::PUT,
                &format!("/connector-plugins/{plugin}/config/validate"),
                Some(&config),
            )
            .await?
            .ok_or_else(|| PlanError::Refused(format!("Connect has no plugin {class}")))?;
        let mut fields = Vec::new();
        for item in answer["configs"].as_array().into_iter().flatten() {
            let errors: Vec<String> = item["value"]["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect();
            if !errors.is_empty() {
                fields.push(FieldErrors {
                    field: item["value"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    errors,
                });
            }
        }
        Ok(fields)
    }
}

impl ConnectorsPlan {
    /// Whether applying would change anything.
    pub fn has_changes(&self) -> bool {
        !self.actions.is_empty()
    }

    /// The plan as text (`+` create, `~` update with each key, `-` delete) and a summary line.
    pub fn render(&self, colour: bool) -> String {
        if self.actions.is_empty() {
            return "Connectors: no changes; Connect matches connectors/.".to_owned();
        }
        let paint = |code: &str, text: &str| super::paint(colour, code, text);
        let mut out = String::new();
        let (mut create, mut update, mut delete) = (0, 0, 0);
        for action in &self.actions {
            match action {
                ConnectorAction::Create { name, config } => {
                    create += 1;
                    let _ = writeln!(
                        out,
                        "{}",
                        paint(
                            "32",
                            &format!("+ {name}  create ({})", config["connector.class"])
                        )
                    );
                }
                ConnectorAction::Update { name, changes, .. } => {
                    update += 1;
                    let _ = writeln!(out, "{}", paint("33", &format!("~ {name}")));
                    let width = changes.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
                    for (key, from, to) in changes {
                        let show =
                            |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
                        let _ = writeln!(out, "    {key:width$}  {} -> {}", show(from), show(to));
                    }
                }
                ConnectorAction::Delete { name } => {
                    delete += 1;
                    let _ = writeln!(
                        out,
                        "{}",
                        paint("31", &format!("- {name}  delete (no file in connectors/)"))
                    );
                }
            }
        }
        let _ = write!(
            out,
            "Connectors: {create} to create, {update} to update, {delete} to delete."
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_is_summed_up_by_its_first_line_and_deepest_cause() {
        let trace = "org.apache.kafka.connect.errors.ConnectException: Exiting WorkerSinkTask\n\tat a.b(C.java:1)\nCaused by: org.apache.kafka.connect.errors.DataException: non Data Error\n\tat d.e(F.java:2)\nCaused by: com.mongodb.MongoTimeoutException: Timed out\n\tat g.h(I.java:3)\n";
        assert_eq!(
            trace_summary(trace),
            "org.apache.kafka.connect.errors.ConnectException: Exiting WorkerSinkTask (caused by com.mongodb.MongoTimeoutException: Timed out)"
        );
        assert_eq!(trace_summary("just this\n\tat x"), "just this");
    }

    #[test]
    fn a_deployment_reads_its_prefixed_topics_under_a_prefixed_name() {
        let connector = DesiredConnector {
            name: "mongo-sink-a".into(),
            config: [
                ("connector.class", "x"),
                ("topics", "sink.a, sink.b"),
                ("errors.deadletterqueue.topic.name", "connect.sink.dlq"),
                ("database", "clinic"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        };

        let deployed = connector.of_deployment("qa1.");

        assert_eq!(deployed.name, "qa1.mongo-sink-a");
        assert_eq!(deployed.config["topics"], "qa1.sink.a,qa1.sink.b");
        assert_eq!(
            deployed.config["errors.deadletterqueue.topic.name"],
            "qa1.connect.sink.dlq"
        );
        assert_eq!(deployed.config["database"], "clinic");
    }
}
