//! SMTP with `lettre`, read back through Mailpit's HTTP API.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use lettre::message::MultiPart;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;

use super::ROUND_TRIP_TIMEOUT;
use crate::endpoints::Endpoints;

/// What was mailed and what Mailpit holds.
#[derive(Debug)]
pub struct MailRoundTrip {
    /// Recipient address.
    pub to: String,
    /// Subject sent (unique per run).
    pub subject: String,
    /// Text part sent.
    pub text: String,
    /// HTML part sent.
    pub html: String,
    /// The message as Mailpit parsed it.
    pub received: MailpitMessage,
    /// SMTP hand-off to API visibility.
    pub elapsed: Duration,
}

/// The fields of Mailpit's `GET /api/v1/message/{id}` the check compares.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MailpitMessage {
    /// Mailpit's id of the message.
    #[serde(rename = "ID")]
    pub id: String,
    /// Subject header.
    pub subject: String,
    /// Recipients.
    pub to: Vec<MailpitAddress>,
    /// Text part.
    pub text: String,
    /// HTML part.
    #[serde(rename = "HTML")]
    pub html: String,
}

/// An address as Mailpit reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MailpitAddress {
    /// The display name, empty when none.
    pub name: String,
    /// The address.
    pub address: String,
}

#[derive(Deserialize)]
struct SearchResult {
    messages: Vec<SearchHit>,
}

#[derive(Deserialize)]
struct SearchHit {
    #[serde(rename = "ID")]
    id: String,
}

/// Sends a two-part (text and HTML) email over plain SMTP and reads it back from Mailpit.
pub async fn round_trip(endpoints: &Endpoints) -> anyhow::Result<MailRoundTrip> {
    let token = super::unique("mail");
    let to = format!("{token}@example.org");
    let subject = format!("Smoke test {token}");
    let text = format!("Hello from clinic smoke.\nToken: {token}");
    let html = format!("<p>Hello from <b>clinic smoke</b>.</p><p>Token: {token}</p>");
    let message = Message::builder()
        .from("Clinic Smoke <smoke@clinic.local>".parse()?)
        .to(to.parse()?)
        .subject(&subject)
        .multipart(MultiPart::alternative_plain_html(
            text.clone(),
            html.clone(),
        ))
        .context("building the smoke email")?;

    // Local SMTP without TLS; production settings come with the notifications processor.
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&endpoints.smtp_host)
        .port(endpoints.smtp_port)
        .build();
    let started = Instant::now();
    mailer.send(message).await.with_context(|| {
        format!(
            "sending over SMTP to {}:{}",
            endpoints.smtp_host, endpoints.smtp_port
        )
    })?;

    let received = await_message(&endpoints.mailpit_url, &subject).await?;
    Ok(MailRoundTrip {
        to,
        subject,
        text,
        html,
        received,
        elapsed: started.elapsed(),
    })
}

/// Waits (up to the smoke's round-trip timeout) until Mailpit at `mailpit_url` holds a message
/// with this exact subject, and reads it (text with the line ends as written).
///
/// # Errors
/// Mailpit unreachable, or no such message in time.
pub async fn await_message(mailpit_url: &str, subject: &str) -> anyhow::Result<MailpitMessage> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + ROUND_TRIP_TIMEOUT;
    let query = format!("subject:\"{subject}\"");
    let id = loop {
        if let Some(id) = search(&http, mailpit_url, &query, 1)
            .await?
            .into_iter()
            .next()
        {
            break id;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "Mailpit never showed {subject:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    read_message(&http, mailpit_url, &id).await
}

async fn read_message(
    http: &reqwest::Client,
    mailpit_url: &str,
    id: &str,
) -> anyhow::Result<MailpitMessage> {
    let mut received: MailpitMessage = http
        .get(format!("{mailpit_url}/api/v1/message/{id}"))
        .send()
        .await
        .context("reading the message from Mailpit")?
        .error_for_status()?
        .json()
        .await
        .context("decoding Mailpit's message")?;
    // MIME carries text with CRLF line ends; compare text as written.
    received.text = received.text.replace("\r\n", "\n");
    Ok(received)
}

/// Every message Mailpit's search `query` finds (e.g. `subject:"…"`, `to:…`), read in full,
/// up to `limit`: for counting what arrived, duplicates included.
///
/// # Errors
/// Mailpit unreachable or answering something else.
pub async fn messages(
    mailpit_url: &str,
    query: &str,
    limit: usize,
) -> anyhow::Result<Vec<MailpitMessage>> {
    let http = reqwest::Client::new();
    let mut found = Vec::new();
    for id in search(&http, mailpit_url, query, limit).await? {
        found.push(read_message(&http, mailpit_url, &id).await?);
    }
    Ok(found)
}

/// The ids of up to `limit` messages Mailpit's search `query` finds, newest first.
async fn search(
    http: &reqwest::Client,
    mailpit_url: &str,
    query: &str,
    limit: usize,
) -> anyhow::Result<Vec<String>> {
    let result: SearchResult = http
        .get(format!("{mailpit_url}/api/v1/search"))
        .query(&[("query", query.to_owned()), ("limit", limit.to_string())])
        .send()
        .await
        .context("searching Mailpit")?
        .error_for_status()?
        .json()
        .await
        .context("reading Mailpit's search result")?;
    Ok(result.messages.into_iter().map(|hit| hit.id).collect())
}
