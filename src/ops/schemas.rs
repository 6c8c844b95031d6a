//! The Avro schemas of the topics the suite produces, as desired state in the schema registry
//! (its Confluent-compatible API): one subject per schema file named in `topics.yaml`
//! (`<prefix><topic>-value` / `-key`, the subject naming the processors' codec uses), each with a
//! compatibility level (BACKWARD unless the file says otherwise). A changed schema is checked
//! against the latest version before it is registered; an incompatible one is refused with the
//! registry's own reason.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::PlanError;
use super::topics::TopicsFile;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// Compatibility when the file names none.
pub const DEFAULT_COMPATIBILITY: &str = "BACKWARD";

/// A subject as it should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredSubject {
    /// Subject name.
    pub subject: String,
    /// The schema file.
    pub file: String,
    /// The schema in Avro's canonical form.
    pub canonical: String,
    /// The schema as written.
    #[serde(skip)]
    pub text: String,
    /// Compatibility level.
    pub compatibility: String,
}

/// The subjects `topics.yaml` (at `path`) asks for, in `environment`, under `prefix` when given
/// (the deployment's; otherwise the file's).
///
/// # Errors
/// Unreadable or invalid schema files, or an invalid `topics.yaml`.
pub fn desired(
    path: &Path,
    environment: Option<&str>,
    prefix: Option<&str>,
) -> Result<Vec<DesiredSubject>, PlanError> {
    let file = TopicsFile::load(path)?;
    let prefix = match prefix {
        Some(prefix) => prefix.to_owned(),
        None => file.desired(environment)?.prefix,
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut subjects = Vec::new();
    for (topic, spec) in &file.topics {
        for (suffix, serialization) in [("key", &spec.key), ("value", &spec.value)] {
            let Some(serialization) = serialization else {
                continue;
            };
            let Some(schema) = &serialization.schema else {
                continue;
            };
            let schema_path = base.join(schema);
            let error = |message: String| PlanError::File {
                path: schema_path.display().to_string(),
                message,
            };
            let text = std::fs::read_to_string(&schema_path).map_err(|e| error(e.to_string()))?;
            let parsed =
                Schema::parse_str(&text).map_err(|e| error(format!("not an Avro schema: {e}")))?;
            subjects.push(DesiredSubject {
                subject: format!("{prefix}{topic}-{suffix}"),
                file: schema.clone(),
                canonical: parsed.canonical_form(),
                text,
                compatibility: serialization
                    .compatibility
                    .clone()
                    .unwrap_or_else(|| DEFAULT_COMPATIBILITY.to_owned()),
            });
        }
    }
    Ok(subjects)
}

/// One step of a schemas plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum SchemaAction {
    /// Set the subject's compatibility level.
    SetCompatibility {
        /// Subject.
        subject: String,
        /// Current level (`None`: the registry's global one).
        from: Option<String>,
        /// Desired level.
        to: String,
    },
    /// Register the file's schema as the subject's next version.
    Register {
        /// Subject.
        subject: String,
        /// Schema file.
        file: String,
        /// Whether the subject exists already (a new version rather than the first).
        new_version: bool,
        /// The schema text.
        #[serde(skip)]
        text: String,
    },
    /// The file's schema is not compatible with the latest version: apply will refuse it.
    Incompatible {
        /// Subject.
        subject: String,
        /// Schema file.
        file: String,
        /// Compatibility level it was checked under.
        compatibility: String,
        /// The schema text.
        #[serde(skip)]
        text: String,
    },
}

/// The steps that bring the registry to the files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SchemasPlan {
    /// The steps.
    pub actions: Vec<SchemaAction>,
}

/// The registry's ccompat API.
pub struct Registry {
    url: String,
    http: reqwest::Client,
    /// Basic auth (`CLINIC_REGISTRY_USERNAME` / `CLINIC_REGISTRY_PASSWORD`).
    credentials: Option<(String, String)>,
}

#[derive(Deserialize)]
struct Latest {
    schema: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Config {
    compatibility_level: String,
}

#[derive(Deserialize)]
struct Compatibility {
    is_compatible: bool,
}

impl Registry {
    /// The registry at `url` (e.g. `http://127.0.0.1:8081/apis/ccompat/v7`).
    pub fn new(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            credentials: crate::endpoints::registry_credentials(),
        }
    }

    /// `request` with the registry's basic auth, when credentials are set.
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<Option<T>, PlanError> {
        let response = self
            .authorized(self.http.get(format!("{}{path}", self.url)))
            .send()
            .await
            .map_err(registry_error)?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = checked(response).await?;
        response.json().await.map(Some).map_err(registry_error)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, PlanError> {
        let response = self
            .authorized(self.http.request(method, format!("{}{path}", self.url)))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .json(&body)
            .send()
            .await
            .map_err(registry_error)?;
        checked(response)
            .await?
            .json()
            .await
            .map_err(registry_error)
    }

    /// Compares the files' subjects with the registry.
    ///
    /// # Errors
    /// The registry cannot be reached or answers an error.
    pub async fn plan(&self, desired: &[DesiredSubject]) -> Result<SchemasPlan, PlanError> {
        let mut actions = Vec::new();
        for want in desired {
            let subject = &want.subject;
            let latest: Option<Latest> = self
                .get(&format!("/subjects/{subject}/versions/latest"))
                .await?;
            let level: Option<Config> = self.get(&format!("/config/{subject}")).await?;
            let level = level.map(|c| c.compatibility_level);
            if level.as_deref() != Some(want.compatibility.as_str()) {
                actions.push(SchemaAction::SetCompatibility {
                    subject: subject.clone(),
                    from: level,
                    to: want.compatibility.clone(),
                });
            }
            let Some(latest) = latest else {
                actions.push(SchemaAction::Register {
                    subject: subject.clone(),
                    file: want.file.clone(),
                    new_version: false,
                    text: want.text.clone(),
                });
                continue;
            };
            let same = Schema::parse_str(&latest.schema)
                .map(|s| s.canonical_form() == want.canonical)
                .unwrap_or(false);
            if same {
                continue;
            }
            let check: Compatibility = serde_json::from_value(
                self.send(
                    reqwest::Method::POST,
                    &format!("/compatibility/subjects/{subject}/versions/latest"),
                    json!({ "schema": want.text }),
                )
                .await?,
            )
            .map_err(|e| PlanError::Kafka(format!("registry answer: {e}")))?;
            if check.is_compatible {
                actions.push(SchemaAction::Register {
                    subject: subject.clone(),
                    file: want.file.clone(),
                    new_version: true,
                    text: want.text.clone(),
                });
            } else {
                actions.push(SchemaAction::Incompatible {
                    subject: subject.clone(),
                    file: want.file.clone(),
                    compatibility: want.compatibility.clone(),
                    text: want.text.clone(),
                });
            }
        }
        Ok(SchemasPlan { actions })
    }

    /// Applies the plan: compatibility levels first, so every registration below is checked under
    /// the desired level. An incompatible schema is refused with the registry's reason (the
    /// registry itself rejects it; nothing is registered).
    ///
    /// # Errors
    /// The first refusal or failure; earlier steps stay applied.
    pub async fn apply(
        &self,
        plan: &SchemasPlan,
        mut progress: impl FnMut(&SchemaAction),
    ) -> Result<(), PlanError> {
        let mut ordered: Vec<&SchemaAction> = plan
            .actions
            .iter()
            .filter(|a| matches!(a, SchemaAction::SetCompatibility { .. }))
            .collect();
        ordered.extend(
            plan.actions
                .iter()
                .filter(|a| !matches!(a, SchemaAction::SetCompatibility { .. })),
        );
        for action in ordered {
            progress(action);
            match action {
                SchemaAction::SetCompatibility { subject, to, .. } => {
                    self.send(
                        reqwest::Method::PUT,
                        &format!("/config/{subject}"),
                        json!({ "compatibility": to }),
                    )
                    .await?;
                }
                SchemaAction::Register { subject, text, .. } => {
                    self.send(
                        reqwest::Method::POST,
                        &format!("/subjects/{subject}/versions"),
                        json!({ "schema": text }),
                    )
                    .await?;
                }
                SchemaAction::Incompatible {
                    subject,
                    file,
                    text,
                    ..
                } => {
                    // Ask the registry to register it anyway: under the subject's rule it refuses,
                    // and its refusal carries the reason the compatibility check does not.
                    let reason = match self
                        .send(
                            reqwest::Method::POST,
                            &format!("/subjects/{subject}/versions"),
                            json!({ "schema": text }),
                        )
                        .await
                    {
                        Err(PlanError::Kafka(message)) => message,
                        Err(other) => other.to_string(),
                        Ok(_) => "the registry accepted it after all".to_owned(),
                    };
                    return Err(PlanError::Refused(format!(
                        "{subject}: {file} is not compatible: {reason}"
                    )));
                }
            }
        }
        Ok(())
    }
}

async fn checked(response: reqwest::Response) -> Result<reqwest::Response, PlanError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body: BTreeMap<String, serde_json::Value> = response.json().await.unwrap_or_default();
    let message = body
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or("no message")
        .to_owned();
    Err(PlanError::Kafka(format!(
        "registry answered {status}: {message}"
    )))
}

fn registry_error(error: reqwest::Error) -> PlanError {
    PlanError::Kafka(format!("schema registry: {error}"))
}

impl SchemasPlan {
    /// Whether applying would change anything.
    pub fn has_changes(&self) -> bool {
        self.actions
            .iter()
            .any(|a| !matches!(a, SchemaAction::Incompatible { .. }))
    }

    /// Whether some schema would be refused.
    pub fn has_blockers(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, SchemaAction::Incompatible { .. }))
    }

    /// The plan as text (`+` first version, `~` new version or level, `!` refused) with a summary.
    pub fn render(&self, colour: bool) -> String {
        if self.actions.is_empty() {
            return "Schemas: no changes; the registry matches the files.".to_owned();
        }
        let paint = |code: &str, text: &str| super::paint(colour, code, text);
        let mut out = String::new();
        let (mut register, mut levels, mut refused) = (0, 0, 0);
        for action in &self.actions {
            let line = match action {
                SchemaAction::SetCompatibility { subject, from, to } => {
                    levels += 1;
                    paint(
                        "33",
                        &format!(
                            "~ {subject}  compatibility {} -> {to}",
                            from.as_deref().unwrap_or("(global)")
                        ),
                    )
                }
                SchemaAction::Register {
                    subject,
                    file,
                    new_version,
                    ..
                } => {
                    register += 1;
                    if *new_version {
                        paint(
                            "33",
                            &format!("~ {subject}  new version from {file} (compatible)"),
                        )
                    } else {
                        paint("32", &format!("+ {subject}  register {file}"))
                    }
                }
                SchemaAction::Incompatible {
                    subject,
                    file,
                    compatibility,
                    ..
                } => {
                    refused += 1;
                    paint(
                        "35",
                        &format!(
                            "! {subject}  {file} is not {compatibility}-compatible with the latest version"
                        ),
                    )
                }
            };
            let _ = writeln!(out, "{line}");
        }
        let _ = write!(
            out,
            "Schemas: {register} to register, {levels} compatibility levels to set, {refused} incompatible."
        );
        out
    }
}
