//! Settings of `clinic-migrations` (defaults < `CLINIC_SETTINGS` TOML file < `CLINIC__…` env).

use clinic::cdc::{Encoding, Envelope, Format};
use clinic::settings::InvalidSetting;
use clinic::streams::kafka::StreamsSettings;
use serde::{Deserialize, Serialize};

/// Everything the binary reads.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Consuming, producing, committing (`[streams]`).
    pub streams: StreamsSettings,
    /// The inputs and their forms (`[inputs]`).
    pub inputs: Inputs,
    /// How migrations run (`[migration]`).
    pub migration: Migration,
}

impl clinic::streams::app::Settings for Settings {
    fn streams(&self) -> &StreamsSettings {
        &self.streams
    }

    fn validate(&self) -> Result<(), InvalidSetting> {
        self.streams.validate()?;
        self.inputs.validate()?;
        self.migration.validate()
    }
}

/// The CDC form of each input topic (`{ envelope = "mongo_change_stream" | "debezium", encoding
/// = "avro" | "json" }`) and where profiles come from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inputs {
    /// `clinic.migrations` (the trigger).
    pub migrations: Format,
    /// `gatekeeper.perms` (the legacy shares).
    pub perms: Format,
    /// `clinic.patients`.
    pub patients: Format,
    /// `clinic.clinics`.
    pub clinics: Format,
    /// The profile store's CDC topic (`[inputs.profiles]`).
    pub profiles: Profiles,
    /// Read users' addresses from the CloudEvents of `user.events` (`users:create`,
    /// `users:update`, `users:delete`).
    pub user_events: bool,
}

/// The CDC topic of the profile store: Tidepool's seagull keeps `{_id, userId, value}` documents
/// whose `value` is the profile as JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profiles {
    /// The topic (without the global prefix).
    pub topic: String,
    /// Its change-event envelope.
    pub envelope: Envelope,
    /// Its encoding.
    pub encoding: Encoding,
}

impl Profiles {
    /// The topic's CDC form.
    pub fn format(&self) -> Format {
        Format {
            envelope: self.envelope,
            encoding: self.encoding,
        }
    }
}

/// How migrations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Migration {
    /// Shares moved per step: each step is one record's work (its outputs, store writes and
    /// progress go into one transaction), so a large migration is many small steps and a
    /// crash repeats at most one step's work, which the rewind takes back.
    pub chunk_size: usize,
}

const SOURCE: Format = Format {
    envelope: Envelope::MongoChangeStream,
    encoding: Encoding::Avro,
};

impl Default for Inputs {
    fn default() -> Self {
        Self {
            migrations: SOURCE,
            perms: SOURCE,
            patients: SOURCE,
            clinics: SOURCE,
            profiles: Profiles::default(),
            user_events: true,
        }
    }
}

impl Default for Profiles {
    fn default() -> Self {
        Self {
            topic: "seagull.seagull".into(),
            envelope: SOURCE.envelope,
            encoding: SOURCE.encoding,
        }
    }
}

impl Default for Migration {
    fn default() -> Self {
        Self { chunk_size: 500 }
    }
}

impl Inputs {
    /// A profile topic that is named and not one of the other inputs.
    ///
    /// # Errors
    /// The setting that is wrong.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let topic = self.profiles.topic.trim();
        if topic.is_empty() {
            return Err(InvalidSetting::new("inputs.profiles.topic", "is empty"));
        }
        if crate::names::FIXED_INPUTS.contains(&topic) {
            return Err(InvalidSetting::new(
                "inputs.profiles.topic",
                format!("{topic} is already another input"),
            ));
        }
        Ok(())
    }
}

impl Migration {
    /// A chunk of at least one share.
    ///
    /// # Errors
    /// The setting that is wrong.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.chunk_size == 0 {
            return Err(InvalidSetting::new(
                "migration.chunk_size",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
