//! Settings of `clinic-notifications` (defaults < `CLINIC_SETTINGS` TOML file < `CLINIC__…` env).

use std::collections::BTreeMap;
use std::time::Duration;

use clinic::cdc::{Encoding, Envelope, Format};
use clinic::settings::InvalidSetting;
use clinic::streams::kafka::StreamsSettings;
use serde::{Deserialize, Serialize};

use crate::smtp::SmtpSettings;

/// Everything the binary reads.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Consuming, producing, committing (`[streams]`); the effect stage uses the same.
    pub streams: StreamsSettings,
    /// The inputs and their forms (`[inputs]`).
    pub inputs: Inputs,
    /// What is sent and when (`[notifications]`).
    pub notifications: Notifications,
    /// How email leaves: `smtp` or `mailer` (`[sender]`).
    pub sender: Sender,
    /// The SMTP server (`[smtp]`), for `sender.kind = "smtp"`.
    pub smtp: SmtpSettings,
    /// Tidepool's mailer topic (`[mailer]`), for `sender.kind = "mailer"`.
    pub mailer: Mailer,
}

impl clinic::streams::app::Settings for Settings {
    fn streams(&self) -> &StreamsSettings {
        &self.streams
    }

    fn validate(&self) -> Result<(), InvalidSetting> {
        self.streams.validate()?;
        self.notifications.validate()?;
        if self.sender.kind == SenderKind::Mailer {
            self.mailer.validate()?;
        }
        Ok(())
    }
}

/// The CDC form of each input topic.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inputs {
    /// `clinic.clinics`.
    pub clinics: Format,
    /// `clinic.clinicians`.
    pub clinicians: Format,
    /// `clinic.patients`.
    pub patients: Format,
    /// `clinic.patient_invites`.
    pub patient_invites: Format,
    /// Read users' addresses from the CloudEvents of `user.events`, for requests that name a
    /// user but no address and for admins whose clinician record has none yet.
    pub user_events: bool,
}

const SOURCE: Format = Format {
    envelope: Envelope::MongoChangeStream,
    encoding: Encoding::Avro,
};

impl Default for Inputs {
    fn default() -> Self {
        Self {
            clinics: SOURCE,
            clinicians: SOURCE,
            patients: SOURCE,
            patient_invites: SOURCE,
            user_events: true,
        }
    }
}

/// What is sent and when.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Notifications {
    /// Changes and requests older than this update the tables but send nothing, so a new
    /// consumer group or a replay never mails history.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// The product's name in every email (`ProductName`).
    pub product_name: String,
    /// The web application's address (`WebURL`; links in the emails start with it).
    pub web_url: String,
    /// Where the emails' images are (`AssetURL`).
    pub asset_url: String,
}

impl Default for Notifications {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(24 * 3600),
            product_name: "Tidepool".into(),
            web_url: "https://app.tidepool.org".into(),
            asset_url: "https://s3-us-west-2.amazonaws.com/tidepool-dev-asset".into(),
        }
    }
}

impl Notifications {
    /// A non-zero age and absolute URLs.
    ///
    /// # Errors
    /// The setting that is wrong.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.max_age.is_zero() {
            return Err(InvalidSetting::new(
                "notifications.max_age",
                "must be more than zero",
            ));
        }
        for (name, url) in [("web_url", &self.web_url), ("asset_url", &self.asset_url)] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(InvalidSetting::new(
                    format!("notifications.{name}"),
                    "must be an http(s) URL",
                ));
            }
        }
        Ok(())
    }
}

/// Which sender the effect stage uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sender {
    /// `smtp` (render the templates here, send over SMTP) or `mailer` (publish Tidepool mailer
    /// CloudEvents; the mailer renders and sends).
    pub kind: SenderKind,
}

/// See [`Sender`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SenderKind {
    /// SMTP with `lettre`.
    #[default]
    Smtp,
    /// CloudEvents `email_template:send` for Tidepool's `mailer` service.
    Mailer,
}

/// Tidepool's mailer: the topic it consumes, and the names it knows our templates by.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mailer {
    /// The topic (without the global prefix; Tidepool's is `<namespace>-emails`).
    pub topic: String,
    /// The CloudEvents `source` attribute (Tidepool's worker puts its consumer group there).
    pub source: String,
    /// Template → the mailer's name for it, for templates the mailer keeps under another name
    /// (`[mailer.templates] custodial_account_created = "…"`); others go by their own name.
    /// Tidepool's mailer has the worker's five; `custodial_account_created`,
    /// `clinician_invitation` and `patient_clinic_invitation` are hydrophone's emails there, so
    /// an operator adds them to the mailer (`docs/processors.md`) and names them here if the
    /// names differ.
    pub templates: BTreeMap<String, String>,
}

impl Default for Mailer {
    fn default() -> Self {
        Self {
            topic: "emails".into(),
            source: "clinic-notifications".into(),
            templates: BTreeMap::new(),
        }
    }
}

impl Mailer {
    /// The mailer's name for `template`.
    pub fn template_name<'a>(&'a self, template: &'a str) -> &'a str {
        self.templates
            .get(template)
            .map_or(template, String::as_str)
    }

    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.topic.trim().is_empty() {
            return Err(InvalidSetting::new("mailer.topic", "is empty"));
        }
        for (ours, theirs) in &self.templates {
            let key = format!("mailer.templates.{ours}");
            if crate::templates::variables_of(ours).is_none() {
                return Err(InvalidSetting::new(key, "is no template of this processor"));
            }
            if theirs.trim().is_empty() {
                return Err(InvalidSetting::new(key, "is empty"));
            }
        }
        Ok(())
    }
}
