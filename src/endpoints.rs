//! Where the services the suite talks to are, read from the environment with defaults that match
//! the local stack (`scripts/stack env` prints the same variables).

use std::env;

/// Addresses of Kafka, the schema registry, Kafka Connect, MongoDB and SMTP (plus Mailpit's API,
/// which only tests and the demo use to read back what was mailed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Kafka bootstrap servers (`CLINIC_KAFKA_BROKERS`, default `127.0.0.1:9092`).
    pub kafka_brokers: String,
    /// Apicurio Registry root URL, without an API path (`CLINIC_REGISTRY_URL`, default
    /// `http://127.0.0.1:8081`). Producers use its Confluent-compatible API
    /// ([`Endpoints::schema_registry_url`]); Connect's converter uses its native v2 API.
    pub registry_url: String,
    /// Kafka Connect REST API (`CLINIC_CONNECT_URL`, default `http://127.0.0.1:8083`).
    pub connect_url: String,
    /// MongoDB connection string (`CLINIC_MONGO_URI`, default `mongodb://127.0.0.1:27017`).
    pub mongo_uri: String,
    /// SMTP host (`CLINIC_SMTP_HOST`, default `127.0.0.1`).
    pub smtp_host: String,
    /// SMTP port (`CLINIC_SMTP_PORT`, default `1025`).
    pub smtp_port: u16,
    /// Mailpit's HTTP API (`CLINIC_MAILPIT_URL`, default `http://127.0.0.1:8025`).
    pub mailpit_url: String,
}

impl Endpoints {
    /// Reads every address from its environment variable, falling back to the local stack's.
    ///
    /// # Errors
    /// When `CLINIC_SMTP_PORT` is set but is not a port number.
    pub fn from_env() -> anyhow::Result<Self> {
        let smtp_port = var("CLINIC_SMTP_PORT", "1025");
        Ok(Self {
            kafka_brokers: kafka_brokers(),
            registry_url: registry_url(),
            connect_url: trim_slash(var("CLINIC_CONNECT_URL", "http://127.0.0.1:8083")),
            mongo_uri: var("CLINIC_MONGO_URI", "mongodb://127.0.0.1:27017"),
            smtp_host: var("CLINIC_SMTP_HOST", "127.0.0.1"),
            smtp_port: smtp_port.parse().map_err(|_| {
                anyhow::anyhow!("CLINIC_SMTP_PORT must be a port number, got {smtp_port:?}")
            })?,
            mailpit_url: trim_slash(var("CLINIC_MAILPIT_URL", "http://127.0.0.1:8025")),
        })
    }

    /// The registry's Confluent-compatible API, the one `schema_registry_converter` speaks
    /// ([`registry_api_url`]).
    pub fn schema_registry_url(&self) -> String {
        api_url_or(&self.registry_url)
    }

    /// The registry's native v2 API, the one Apicurio's Kafka Connect converter speaks.
    pub fn apicurio_v2_url(&self) -> String {
        format!("{}/apis/registry/v2", self.registry_url)
    }
}

/// The Confluent-compatible API under a registry root: also the default of every processor's
/// `streams.schema_registry_url`.
pub fn ccompat(registry_url: &str) -> String {
    format!("{registry_url}/apis/ccompat/v7")
}

fn var(name: &str, default: &str) -> String {
    env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// `CLINIC_KAFKA_BROKERS`, or the local stack's: also the default of every processor's
/// `streams.brokers`, so one variable names the cluster for every binary.
pub fn kafka_brokers() -> String {
    var("CLINIC_KAFKA_BROKERS", "127.0.0.1:9092")
}

/// `CLINIC_TOPIC_PREFIX`: the deployment's topic prefix for the operators' desired-state
/// commands (the Helm chart sets it from `kafka.topicPrefix`, as it sets the processors'
/// `streams.topic_prefix`); `None` when unset or empty, and topics.yaml's prefix applies.
pub fn topic_prefix() -> Option<String> {
    env::var("CLINIC_TOPIC_PREFIX")
        .ok()
        .filter(|p| !p.is_empty())
}

/// Kafka client properties from the environment for the operators' commands and every other
/// client built outside the runner (which has `streams.librdkafka`): `CLINIC_KAFKA__<NAME>` sets
/// librdkafka's `<name>` with `_` for `.` (`CLINIC_KAFKA__SECURITY_PROTOCOL=SASL_SSL`,
/// `CLINIC_KAFKA__SASL_PASSWORD=…`), so a SASL or TLS cluster needs no file.
pub fn kafka_properties() -> Vec<(String, String)> {
    properties_of(env::vars())
}

fn properties_of(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut properties: Vec<(String, String)> = vars
        .filter_map(|(name, value)| {
            let property = name.strip_prefix("CLINIC_KAFKA__")?;
            Some((property.to_lowercase().replace('_', "."), value))
        })
        .collect();
    properties.sort();
    properties
}

/// A Kafka client for `brokers` with [`kafka_properties`] set.
pub fn kafka_client(brokers: &str) -> rdkafka::ClientConfig {
    let mut client = rdkafka::ClientConfig::new();
    client.set("bootstrap.servers", brokers);
    for (name, value) in kafka_properties() {
        client.set(name, value);
    }
    client
}

/// The registry's basic-auth credentials, when `CLINIC_REGISTRY_USERNAME` is set (with
/// `CLINIC_REGISTRY_PASSWORD`): for every binary's registry client.
pub fn registry_credentials() -> Option<(String, String)> {
    let user = env::var("CLINIC_REGISTRY_USERNAME")
        .ok()
        .filter(|u| !u.is_empty())?;
    Some((
        user,
        env::var("CLINIC_REGISTRY_PASSWORD").unwrap_or_default(),
    ))
}

/// The registry's Confluent-compatible API for every binary: `CLINIC_REGISTRY_API_URL` when set
/// (any vendor's: a Confluent Schema Registry's root, Apicurio's `…/apis/ccompat/v7`; the Helm
/// chart sets it from `schemaRegistry.url`), else Apicurio's under `CLINIC_REGISTRY_URL`.
pub fn registry_api_url() -> String {
    api_url_or(&registry_url())
}

fn api_url_or(registry_url: &str) -> String {
    env::var("CLINIC_REGISTRY_API_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .map_or_else(|| ccompat(registry_url), trim_slash)
}

/// `CLINIC_REGISTRY_URL` (the registry's root), or the local stack's.
pub fn registry_url() -> String {
    trim_slash(var("CLINIC_REGISTRY_URL", "http://127.0.0.1:8081"))
}

fn trim_slash(url: String) -> String {
    url.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn kafka_properties_come_from_double_underscore_variables() {
        let vars = [
            ("CLINIC_KAFKA__SECURITY_PROTOCOL", "SASL_SSL"),
            ("CLINIC_KAFKA_BROKERS", "kafka:9092"),
            ("CLINIC_KAFKA__SASL_PASSWORD", "secret"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(
            super::properties_of(vars.into_iter()),
            [
                ("sasl.password".to_owned(), "secret".to_owned()),
                ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
            ]
        );
    }

    use super::*;

    #[test]
    fn registry_api_urls_are_derived_from_the_root() {
        let endpoints = Endpoints {
            kafka_brokers: String::new(),
            registry_url: trim_slash("http://registry:8081/".to_owned()),
            connect_url: String::new(),
            mongo_uri: String::new(),
            smtp_host: String::new(),
            smtp_port: 25,
            mailpit_url: String::new(),
        };
        assert_eq!(
            endpoints.schema_registry_url(),
            "http://registry:8081/apis/ccompat/v7"
        );
        assert_eq!(
            endpoints.apicurio_v2_url(),
            "http://registry:8081/apis/registry/v2"
        );
    }
}
