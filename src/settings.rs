//! Typed settings for every binary: defaults < an optional TOML file < `CLINIC__SECTION__KEY`
//! environment variables (double underscores separate levels, so `CLINIC__STREAMS__BROKERS` sets
//! `streams.brokers`). The settings types carry `deny_unknown_fields`, so a misspelt key is an
//! error naming it, before any connection opens.
//!
//! Environment keys cannot carry dots (figment reads them as nesting), so librdkafka properties
//! given through the environment are spelt with underscores (`…__LIBRDKAFKA__FETCH_MIN_BYTES`);
//! the runner turns underscores into dots, which no librdkafka property name contains.

use std::collections::BTreeMap;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format as _, Json, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A setting whose value cannot work, found by a settings type's `validate()` before any
/// connection opens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct InvalidSetting {
    /// The setting's path (`streams.brokers`), or the paths of the settings that conflict.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

impl InvalidSetting {
    /// `key` has a value that cannot work, because of `problem`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// For maps of passthrough settings (librdkafka properties): values written as numbers or
/// booleans, as the environment parser reads `1024` or `true`, are kept as their text.
///
/// # Errors
/// A value that is a list or a map.
pub fn string_map<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Integer(i64),
        Unsigned(u64),
        Float(f64),
        Flag(bool),
    }
    let raw: BTreeMap<String, Scalar> = serde::Deserialize::deserialize(deserializer)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Scalar::Text(s) => s,
                Scalar::Integer(i) => i.to_string(),
                Scalar::Unsigned(u) => u.to_string(),
                Scalar::Float(f) => f.to_string(),
                Scalar::Flag(b) => b.to_string(),
            };
            (k, text)
        })
        .collect())
}

/// Loads `T` from its defaults, then `file` (when given; it must exist; TOML, or JSON when its
/// name ends in `.json`, as the Helm chart renders it), then the environment.
///
/// # Errors
/// A missing file, a malformed value, or an unknown key, with the key's path in the message.
pub fn load<T: Serialize + DeserializeOwned + Default>(file: Option<&Path>) -> anyhow::Result<T> {
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        anyhow::ensure!(
            file.exists(),
            "settings file {} does not exist",
            file.display()
        );
        figment = if file.extension().is_some_and(|e| e == "json") {
            figment.merge(Json::file(file))
        } else {
            figment.merge(Toml::file(file))
        };
    }
    figment = figment.merge(Env::prefixed("CLINIC__").split("__").lowercase(true));
    figment
        .extract()
        .map_err(|error| anyhow::anyhow!("settings: {error}"))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        streams: Streams,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Streams {
        brokers: String,
        commit_interval_ms: u64,
        #[serde(deserialize_with = "string_map")]
        librdkafka: BTreeMap<String, String>,
    }

    impl Default for Streams {
        fn default() -> Self {
            Self {
                brokers: "127.0.0.1:9092".into(),
                commit_interval_ms: 100,
                librdkafka: BTreeMap::new(),
            }
        }
    }

    #[test]
    #[allow(
        clippy::result_large_err,
        reason = "figment's Jail API returns its own error type"
    )]
    fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "clinic.toml",
                "[streams]\nbrokers = \"kafka:9092\"\ncommit_interval_ms = 250\n",
            )?;
            jail.set_env("CLINIC__STREAMS__COMMIT_INTERVAL_MS", "500");
            jail.set_env("CLINIC__STREAMS__LIBRDKAFKA__FETCH_MIN_BYTES", "1024");

            let loaded: Sample = load(Some(Path::new("clinic.toml"))).map_err(|e| e.to_string())?;

            assert_eq!(loaded.streams.brokers, "kafka:9092");
            assert_eq!(loaded.streams.commit_interval_ms, 500);
            assert_eq!(
                loaded
                    .streams
                    .librdkafka
                    .get("fetch_min_bytes")
                    .map(String::as_str),
                Some("1024")
            );
            Ok(())
        });
    }

    #[test]
    #[allow(
        clippy::result_large_err,
        reason = "figment's Jail API returns its own error type"
    )]
    fn a_json_file_is_read_as_json() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "clinic.json",
                r#"{"streams": {"brokers": "kafka:9092", "commit_interval_ms": 250}}"#,
            )?;
            let loaded: Sample = load(Some(Path::new("clinic.json"))).map_err(|e| e.to_string())?;
            assert_eq!(loaded.streams.brokers, "kafka:9092");
            assert_eq!(loaded.streams.commit_interval_ms, 250);
            Ok(())
        });
    }

    #[test]
    #[allow(
        clippy::result_large_err,
        reason = "figment's Jail API returns its own error type"
    )]
    fn a_misspelt_key_is_an_error_naming_it() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CLINIC__STREAMS__BROKRES", "kafka:9092");

            let error = load::<Sample>(None).expect_err("unknown key");

            assert!(error.to_string().contains("brokres"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_is_an_error() {
        assert!(load::<Sample>(Some(Path::new("/nonexistent/clinic.toml"))).is_err());
    }
}
