//! Email leaving over SMTP: an [`Effect`] with `lettre`'s pooled async transport, for the
//! effect stage (`clinic::streams::effect`). Rendering is not its business: it sends an
//! [`Email`] as given, and tells the stage which failures may pass (retried) and which never will
//! (dead-lettered with the server's reply).

use std::time::Duration;

use clinic::streams::effect::{Effect, EffectError};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

/// How the connection to the server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain text (a local relay such as Mailpit).
    None,
    /// Plain text upgraded with STARTTLS, which the server must offer (usually port 587).
    Starttls,
    /// TLS from the first byte (usually port 465).
    Tls,
}

/// Where and as whom email is sent (`[smtp]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    /// Server host name.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Connection security.
    pub tls: TlsMode,
    /// User name, when the server wants credentials.
    pub username: Option<String>,
    /// Password (from a secret: `CLINIC__SMTP__PASSWORD`, never a file in the repository).
    #[serde(skip_serializing)]
    pub password: Option<SecretString>,
    /// The sender's display name.
    pub from_name: String,
    /// The sender's address.
    pub from_address: String,
    /// How long one SMTP exchange may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1025,
            tls: TlsMode::None,
            username: None,
            password: None,
            from_name: "Tidepool".into(),
            from_address: "noreply@tidepool.org".into(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// One rendered email: what the effect stage hands over.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Email {
    /// The recipient's address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text part.
    pub text: String,
    /// HTML part.
    pub html: String,
}

/// Sends [`Email`]s over SMTP.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Smtp {
    /// A sender with a pooled transport (connections are opened on first use). Call it within a
    /// Tokio runtime: the pool keeps a task there.
    ///
    /// # Errors
    /// A message naming the setting that is wrong (the sender's address, TLS parameters).
    pub fn new(settings: &SmtpSettings) -> Result<Self, String> {
        let from: Mailbox = format!("{} <{}>", settings.from_name, settings.from_address)
            .parse()
            .map_err(|e| format!("smtp.from_name / smtp.from_address: {e}"))?;
        let tls = match settings.tls {
            TlsMode::None => Tls::None,
            mode => {
                let parameters = TlsParameters::new(settings.host.clone())
                    .map_err(|e| format!("smtp.tls for {}: {e}", settings.host))?;
                if mode == TlsMode::Tls {
                    Tls::Wrapper(parameters)
                } else {
                    Tls::Required(parameters)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port)
            .tls(tls)
            .timeout(Some(settings.timeout));
        if let Some(user) = &settings.username {
            let password = settings
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Self {
            transport: builder.build(),
            from,
        })
    }
}

/// What a failed SMTP hand-off means for the effect stage: a 5xx reply will never change
/// (dead-lettered with the reply); a 4xx reply, a connection, TLS or timeout failure may pass
/// (retried).
fn classify(error: &lettre::transport::smtp::Error) -> EffectError {
    let reply = error
        .status()
        .map(|code| format!("SMTP {code}: {error}"))
        .unwrap_or_else(|| error.to_string());
    if error.is_permanent() {
        EffectError::Permanent(reply)
    } else {
        EffectError::Transient(reply)
    }
}

impl Effect for Smtp {
    type Request = Email;

    async fn perform(&mut self, email: &Email) -> Result<(), EffectError> {
        let to: Mailbox = email
            .to
            .parse()
            .map_err(|e| EffectError::Permanent(format!("recipient address: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&email.subject)
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))
            .map_err(|e| EffectError::Permanent(format!("message: {e}")))?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| classify(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_tls_mode_builds_and_a_bad_sender_is_refused() {
        for tls in [TlsMode::None, TlsMode::Starttls, TlsMode::Tls] {
            let settings = SmtpSettings {
                host: "smtp.example.org".into(),
                tls,
                username: Some("mailer".into()),
                password: Some("secret".into()),
                ..SmtpSettings::default()
            };
            assert!(Smtp::new(&settings).is_ok(), "{tls:?}");
        }
        let bad = SmtpSettings {
            from_address: "not an address".into(),
            ..SmtpSettings::default()
        };
        assert!(Smtp::new(&bad).is_err_and(|e| e.contains("from_address")));
    }
}
