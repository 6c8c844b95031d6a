//! How an [`Outgoing`] email leaves, as the effect stage's [`Effect`]: rendered here and sent
//! over SMTP, or published as the CloudEvent Tidepool's `mailer` service consumes (it renders and
//! sends through SES), so a deployment that keeps its mailer changes nothing in delivery.

use std::time::Duration;

use clinic::settings::InvalidSetting;
use clinic::streams::effect::{Effect, EffectError};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::{SenderKind, Settings};
use crate::model::Outgoing;
use crate::smtp::Smtp;
use crate::templates::Templates;

/// The CloudEvents type Tidepool's mailer handles.
pub const MAILER_EVENT_TYPE: &str = "email_template:send";

/// The sender the settings choose.
#[allow(
    clippy::large_enum_variant,
    reason = "one sender per process, never moved after start"
)]
pub enum Sender {
    /// Render, then SMTP.
    Smtp {
        /// The templates.
        templates: Templates,
        /// The transport.
        smtp: Smtp,
    },
    /// CloudEvents for Tidepool's mailer.
    Mailer(Mailer),
}

impl Sender {
    /// The sender `settings` choose. Call it within a Tokio runtime (the SMTP pool keeps a task
    /// there).
    ///
    /// # Errors
    /// The setting that is wrong.
    pub fn new(settings: &Settings) -> Result<Self, InvalidSetting> {
        Ok(match settings.sender.kind {
            SenderKind::Smtp => Self::Smtp {
                templates: Templates::new(&settings.notifications),
                smtp: Smtp::new(&settings.smtp)?,
            },
            SenderKind::Mailer => Self::Mailer(Mailer::new(settings)?),
        })
    }
}

impl Effect for Sender {
    type Request = Outgoing;

    async fn perform(&mut self, request: &Outgoing) -> Result<(), EffectError> {
        match self {
            Self::Smtp { templates, smtp } => {
                let email = templates
                    .render(&request.template, &request.to, &request.variables)
                    .map_err(|error| EffectError::Permanent(error.to_string()))?;
                smtp.perform(&email).await
            }
            Self::Mailer(mailer) => mailer.perform(request).await,
        }
    }
}

/// Publishes `email_template:send` CloudEvents in binary mode (attributes in `ce_*` headers,
/// the data as JSON), keyed by the recipient's address, as go-common's `MailerClient` does.
pub struct Mailer {
    producer: FutureProducer,
    topic: String,
    settings: crate::config::Mailer,
}

/// The data of a mailer event: `{recipient, template, variables}`.
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct MailerData {
    /// The address.
    pub recipient: String,
    /// The mailer's template name.
    pub template: String,
    /// Its variables (the mailer adds `AssetURL` and `WebURL`).
    pub variables: std::collections::BTreeMap<String, String>,
}

impl Mailer {
    /// A producer to `<prefix><mailer.topic>`.
    ///
    /// # Errors
    /// When librdkafka refuses the `[streams]` settings for the producer.
    pub fn new(settings: &Settings) -> Result<Self, InvalidSetting> {
        let producer = settings
            .streams
            .client_config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .create()
            .map_err(|e| {
                InvalidSetting::new("streams.librdkafka", format!("the mailer producer: {e}"))
            })?;
        Ok(Self {
            producer,
            topic: format!("{}{}", settings.streams.topic_prefix, settings.mailer.topic),
            settings: settings.mailer.clone(),
        })
    }

    async fn perform(&self, request: &Outgoing) -> Result<(), EffectError> {
        let data = serde_json::to_vec(&MailerData {
            recipient: request.to.clone(),
            template: self.settings.template_name(&request.template).to_owned(),
            variables: request.variables.clone(),
        })
        .map_err(|e| EffectError::Permanent(format!("mailer data: {e}")))?;
        let time = bson::DateTime::now()
            .try_to_rfc3339_string()
            .unwrap_or_default();
        // The request's id is the event's: the same email published twice has one id.
        let headers = clinic::events::binary_headers(
            MAILER_EVENT_TYPE,
            &request.id,
            &self.settings.source,
            &time,
        );
        let record = FutureRecord::to(&self.topic)
            .key(request.to.as_bytes())
            .payload(&data)
            .headers(headers);
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(drop)
            .map_err(|(error, _)| {
                EffectError::Transient(format!("publishing to the mailer topic: {error}"))
            })
    }
}
