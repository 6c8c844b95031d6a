//! Settings of `clinic api` (defaults < the `CLINIC_SETTINGS` TOML file < `CLINIC__…` env).

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::settings::InvalidSetting;

/// Everything the API server reads.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Listening and request limits (`[http]`).
    pub http: HttpSettings,
    /// The database (`[mongo]`).
    pub mongo: MongoSettings,
    /// Token verification (`[auth]`).
    pub auth: AuthSettings,
}

/// Listening and request limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address to listen on; port 0 picks a free one (tests).
    pub listen: SocketAddr,
    /// Address of the operational endpoints (`/healthz`, `/readyz`, `/metrics`), kept off the
    /// public port; port 0 picks a free one (tests).
    pub admin_listen: SocketAddr,
    /// Longest a request may take before it is answered 408.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request body accepted (bytes); larger ones are answered 413.
    pub body_limit_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9100)),
            request_timeout: Duration::from_secs(10),
            body_limit_bytes: 256 * 1024,
        }
    }
}

/// The database.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MongoSettings {
    /// Connection string (a replica set, or FerretDB locally). May carry credentials; prefer
    /// setting it through `CLINIC__MONGO__URI`.
    pub uri: String,
    /// Database name (the CDC topics are named after it: `clinic.patients`, …).
    pub database: String,
}

impl Default for MongoSettings {
    fn default() -> Self {
        Self {
            uri: "mongodb://127.0.0.1:27017".into(),
            database: "clinic".into(),
        }
    }
}

/// How bearer tokens are verified: exactly one of an HS256 secret or an RS256 public key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Shared HS256 secret (`CLINIC__AUTH__HS256_SECRET`).
    #[serde(skip_serializing)]
    pub hs256_secret: Option<SecretString>,
    /// RS256 public key, PEM text.
    pub rs256_public_key_pem: Option<String>,
    /// The claim marking a backend service's token: true, or the string `"yes"` (as Shoreline's
    /// server tokens carry `svr: "yes"`).
    pub service_claim: String,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            rs256_public_key_pem: None,
            service_claim: "svr".into(),
            issuer: None,
            audience: None,
        }
    }
}

impl ApiSettings {
    /// Checks what can be checked before any connection opens.
    ///
    /// # Errors
    /// The first bad setting.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        match (&self.auth.hs256_secret, &self.auth.rs256_public_key_pem) {
            (Some(_), Some(_)) => {
                return Err(InvalidSetting::new(
                    "auth.hs256_secret, auth.rs256_public_key_pem",
                    "set one, not both",
                ));
            }
            (None, None) => {
                return Err(InvalidSetting::new(
                    "auth.hs256_secret, auth.rs256_public_key_pem",
                    "neither is set, so no token could be verified",
                ));
            }
            _ => {}
        }
        if self.auth.service_claim.trim().is_empty() {
            return Err(InvalidSetting::new("auth.service_claim", "is empty"));
        }
        if self.mongo.database.trim().is_empty() {
            return Err(InvalidSetting::new("mongo.database", "is empty"));
        }
        if self.http.request_timeout.is_zero() || self.http.body_limit_bytes == 0 {
            return Err(InvalidSetting::new(
                "http.request_timeout, http.body_limit_bytes",
                "must be positive",
            ));
        }
        Ok(())
    }
}
