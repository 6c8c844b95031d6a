//! What the story's steps share: a client of the API with tokens made on the spot, waiting for
//! documents and emails, and the identity service's `users:delete`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bson::Document;
use futures::TryStreamExt as _;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use crate::endpoints::Endpoints;
use crate::smoke::mail::{MailpitMessage, messages};

/// How long a step waits for its effects.
pub const WAIT: Duration = Duration::from_secs(90);

/// The API, called as any user with an HS256 token signed by its secret.
pub struct Api {
    /// `http://host:port`.
    pub base: String,
    /// The API's `auth.hs256_secret`.
    pub secret: String,
    client: reqwest::Client,
}

impl Api {
    /// A client of the API at `base` signing with `secret`.
    pub fn new(base: String, secret: String) -> Self {
        Self {
            base,
            secret,
            client: reqwest::Client::new(),
        }
    }

    /// A token for `user` (address `<user>@example.org`, name `User <user>`), or for a service.
    ///
    /// # Errors
    /// The clock before 1970, or a token that does not sign.
    pub fn token(&self, user: &str, service: bool, valid: Duration) -> anyhow::Result<String> {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + valid.as_secs();
        let mut claims = json!({ "sub": user, "exp": exp, "email": address(user), "name": format!("User {user}") });
        if service {
            claims["svr"] = json!("yes");
        }
        Ok(jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes()),
        )?)
    }

    /// The typed client (`clinic-client`, generated from the contract) as `user` (a service
    /// when `service`).
    ///
    /// # Errors
    /// A token that does not sign, or an HTTP client that does not build.
    pub fn typed(&self, user: &str, service: bool) -> anyhow::Result<clinic_client::Client> {
        let token = self.token(user, service, Duration::from_secs(600))?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?,
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()?;
        Ok(clinic_client::Client::new_with_client(&self.base, http))
    }

    /// Calls `method path` as `user` (a service when `service`), expecting a 2xx: for the
    /// routes outside the contract (hydrophone's), which the typed client does not have.
    ///
    /// # Errors
    /// The API unreachable or answering otherwise (the message has its answer).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        user: &str,
        service: bool,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let token = self.token(user, service, Duration::from_secs(600))?;
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "{method} {path}: {status} {text}");
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }
}

/// The address the story's tokens give `user`.
pub fn address(user: &str) -> String {
    format!("{user}@example.org")
}

/// A Tidepool-shaped user id (10 hex characters).
pub fn user_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

/// Every document of `name` matching `filter`.
///
/// # Errors
/// The database unreachable.
pub async fn all(
    db: &mongodb::Database,
    name: &str,
    filter: Document,
) -> anyhow::Result<Vec<Document>> {
    Ok(db
        .collection::<Document>(name)
        .find(filter)
        .await?
        .try_collect()
        .await?)
}

/// Waits until `filter` matches exactly `count` documents; returns them.
///
/// # Errors
/// Not so within [`WAIT`].
pub async fn wait_for(
    db: &mongodb::Database,
    name: &str,
    filter: Document,
    count: usize,
) -> anyhow::Result<Vec<Document>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = all(db, name, filter.clone()).await?;
        if found.len() == count {
            return Ok(found);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{}.{name}: {} documents match {filter} after {WAIT:?}, expected {count}",
            db.name(),
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until Mailpit holds exactly `count` messages with `subject` (all of them, when several
/// recipients get it); returns them.
///
/// # Errors
/// Not so within [`WAIT`] (is clinic-notifications running?).
pub async fn await_mail(
    endpoints: &Endpoints,
    subject: &str,
    count: usize,
) -> anyhow::Result<Vec<MailpitMessage>> {
    let deadline = Instant::now() + WAIT;
    let query = format!("subject:\"{subject}\"");
    loop {
        let found: Vec<MailpitMessage> = messages(&endpoints.mailpit_url, &query, 1_000)
            .await?
            .into_iter()
            .filter(|m| m.subject == subject)
            .collect();
        if found.len() >= count {
            anyhow::ensure!(
                found.len() == count,
                "{} emails \"{subject}\", expected {count}",
                found.len()
            );
            return Ok(found);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {count} emails \"{subject}\" in Mailpit after {WAIT:?} (is clinic-notifications running?)",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A binary-mode `users:delete` CloudEvent, as the identity service publishes it.
///
/// # Errors
/// Kafka refusing it.
pub async fn delete_user(endpoints: &Endpoints, user: &str) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &endpoints.kafka_brokers)
        .create()?;
    let time = bson::DateTime::now().try_to_rfc3339_string()?;
    let id = uuid::Uuid::new_v4().to_string();
    let headers = crate::events::binary_headers(crate::events::USERS_DELETE, &id, "demo", &time);
    let data = json!({ "userid": user, "username": address(user) }).to_string();
    producer
        .send(
            FutureRecord::to("user.events")
                .key(user)
                .payload(&data)
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .context("publishing users:delete")?;
    Ok(())
}
