//! Settings of `clinic-deletions` (defaults < `CLINIC_SETTINGS` TOML file < `CLINIC__…` env).

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
}

impl clinic::streams::app::Settings for Settings {
    fn streams(&self) -> &StreamsSettings {
        &self.streams
    }

    fn validate(&self) -> Result<(), InvalidSetting> {
        self.streams.validate()?;
        self.inputs.validate()
    }
}

/// Where user deletions come from, and the CDC form of the clinic tables.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inputs {
    /// `clinic.patients`: `{ envelope = "mongo_change_stream" | "debezium", encoding = "avro" |
    /// "json" }`.
    pub patients: Format,
    /// `clinic.clinicians`, likewise.
    pub clinicians: Format,
    /// Read CloudEvents `users:delete` from `user.events` (binary or structured mode).
    pub user_events: bool,
    /// Also (or instead) read deletions from a Debezium user-table topic (`[inputs.user_table]`).
    pub user_table: Option<UserTable>,
}

/// A Debezium topic of the identity system's user table; a row delete (`op = d`) deletes the user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserTable {
    /// The topic (without the global prefix), e.g. `keycloak.public.user_entity`; it must be in
    /// `topics.yaml` and have its own entry there.
    pub topic: String,
    /// How its values are serialized (`avro` through the registry, or `json`).
    pub encoding: Encoding,
    /// The column holding the user id.
    #[serde(default = "default_id_column")]
    pub id_column: String,
}

fn default_id_column() -> String {
    "id".into()
}

impl Default for Inputs {
    fn default() -> Self {
        let source = Format {
            envelope: Envelope::MongoChangeStream,
            encoding: Encoding::Avro,
        };
        Self {
            patients: source,
            clinicians: source,
            user_events: true,
            user_table: None,
        }
    }
}

impl Inputs {
    /// At least one source of deletions, and a user table that is not one of the other inputs.
    ///
    /// # Errors
    /// The setting that is wrong.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !self.user_events && self.user_table.is_none() {
            return Err(InvalidSetting::new(
                "inputs.user_events, inputs.user_table",
                "neither is set, so no deletion would ever be seen",
            ));
        }
        if let Some(table) = &self.user_table {
            if table.topic.trim().is_empty() || table.id_column.trim().is_empty() {
                return Err(InvalidSetting::new(
                    "inputs.user_table",
                    "topic and id_column must not be empty",
                ));
            }
            if [
                crate::names::USER_EVENTS,
                crate::names::PATIENTS,
                crate::names::CLINICIANS,
            ]
            .contains(&table.topic.as_str())
            {
                return Err(InvalidSetting::new(
                    "inputs.user_table.topic",
                    format!("{} is already another input", table.topic),
                ));
            }
        }
        Ok(())
    }
}
