//! Settings of `clinic-permissions` (defaults < `CLINIC_SETTINGS` TOML file < `CLINIC__…` env).

use clinic::cdc::{Encoding, Envelope, Format};
use clinic::streams::kafka::StreamsSettings;
use serde::{Deserialize, Serialize};

/// Everything the binary reads.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Consuming, producing, committing (`[streams]`).
    pub streams: StreamsSettings,
    /// The CDC form of each input topic (`[inputs]`).
    pub inputs: Inputs,
}

/// The CDC form of each input topic: `{ envelope = "mongo_change_stream" | "debezium",
/// encoding = "avro" | "json" }`. Existing Tidepool connectors write
/// `mongo_change_stream` + `json` (double-encoded), which the JSON decoder reads as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inputs {
    /// `clinic.patients`.
    pub patients: Format,
    /// `clinic.clinicians`.
    pub clinicians: Format,
}

impl clinic::streams::app::Settings for Settings {
    fn streams(&self) -> &StreamsSettings {
        &self.streams
    }
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
        }
    }
}
