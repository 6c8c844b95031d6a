//! Email leaving over SMTP: an [`Effect`] with `lettre`'s async SMTP client, for the effect
//! stage (`clinic::streams::effect`). Rendering is not its business: it sends an
//! [`Email`] as given, and tells the stage which failures may pass (retried) and which never will
//! (dead-lettered with the server's reply).

use std::time::Duration;

use clinic::settings::InvalidSetting;
use clinic::streams::effect::{Effect, EffectError};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
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
    /// A PEM file of root certificates to trust besides the system's (a relay whose certificate
    /// an internal CA signed); for `tls = "starttls"` or `"tls"`.
    pub ca_file: Option<std::path::PathBuf>,
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
            ca_file: None,
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

/// Sends [`Email`]s over SMTP, one at a time (the effect stage performs one request at a time).
///
/// Plain and STARTTLS connections are opened here, with `TCP_NODELAY`, and kept for the next
/// email: `lettre` writes a message's end (`CRLF.CRLF`) apart from its body, and with Nagle's
/// algorithm on, that last write waits for the server's delayed ACK of the body, 40 ms per email
/// on Linux (measured: 43 ms per email through lettre's pool, see `docs/processors.md`). Its pool
/// offers no socket options, so for these two modes the connection is handled here; implicit TLS
/// (port 465) keeps lettre's pooled transport, where the TLS handshake is lettre's business.
pub struct Smtp {
    connection: Connection,
    from: Mailbox,
}

#[allow(
    clippy::large_enum_variant,
    reason = "one per sender, made once and never moved"
)]
enum Connection {
    Direct {
        settings: SmtpSettings,
        tls: Option<TlsParameters>,
        credentials: Option<Credentials>,
        /// The open session, when there is one.
        open: Option<AsyncSmtpConnection>,
    },
    Pooled(AsyncSmtpTransport<Tokio1Executor>),
}

impl Smtp {
    /// A sender (connections are opened on first use). Call it within a Tokio runtime: the
    /// implicit-TLS pool keeps a task there.
    ///
    /// # Errors
    /// The setting that is wrong (the sender's address, TLS parameters).
    pub fn new(settings: &SmtpSettings) -> Result<Self, InvalidSetting> {
        let from = format!("{} <{}>", settings.from_name, settings.from_address)
            .parse::<Mailbox>()
            .map_err(|e| InvalidSetting::new("smtp.from_name, smtp.from_address", e.to_string()))?;
        let tls = match settings.tls {
            TlsMode::None => None,
            _ => {
                let mut builder = TlsParameters::builder(settings.host.clone());
                if let Some(file) = &settings.ca_file {
                    let unusable = |e: &dyn std::fmt::Display| {
                        InvalidSetting::new("smtp.ca_file", format!("{}: {e}", file.display()))
                    };
                    let pem = std::fs::read(file).map_err(|e| unusable(&e))?;
                    let roots = Certificate::from_pem(&pem).map_err(|e| unusable(&e))?;
                    builder = builder.add_root_certificate(roots);
                }
                Some(builder.build().map_err(|e| {
                    InvalidSetting::new("smtp.tls", format!("for {}: {e}", settings.host))
                })?)
            }
        };
        let credentials = settings.username.as_ref().map(|user| {
            let password = settings
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .unwrap_or_default();
            Credentials::new(user.clone(), password)
        });
        let connection = match (settings.tls, tls) {
            (TlsMode::Tls, Some(parameters)) => {
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
                        .port(settings.port)
                        .tls(Tls::Wrapper(parameters))
                        .timeout(Some(settings.timeout));
                if let Some(credentials) = credentials {
                    builder = builder.credentials(credentials);
                }
                Connection::Pooled(builder.build())
            }
            (_, tls) => Connection::Direct {
                settings: settings.clone(),
                tls,
                credentials,
                open: None,
            },
        };
        Ok(Self { connection, from })
    }
}

/// Opens a session: TCP without Nagle, the greeting and EHLO, STARTTLS when asked for,
/// authentication when credentials are set.
async fn open(
    settings: &SmtpSettings,
    tls: Option<&TlsParameters>,
    credentials: Option<&Credentials>,
) -> Result<AsyncSmtpConnection, EffectError> {
    let unreachable = |e: std::io::Error| {
        EffectError::Transient(format!(
            "connecting to {}:{}: {e}",
            settings.host, settings.port
        ))
    };
    let stream = tokio::net::TcpStream::connect((settings.host.as_str(), settings.port))
        .await
        .map_err(unreachable)?;
    stream.set_nodelay(true).map_err(unreachable)?;
    let hello = ClientId::default();
    let mut session = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello)
        .await
        .map_err(|e| classify(&e))?;
    if let Some(parameters) = tls {
        session
            .starttls(parameters.clone(), &hello)
            .await
            .map_err(|e| classify(&e))?;
    }
    if let Some(credentials) = credentials {
        session
            .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
            .await
            .map_err(|e| classify(&e))?;
    }
    Ok(session)
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

impl Smtp {
    /// One session's exchange for `message`: the open session (or a new one), kept when the
    /// server accepted the message, closed after any failure (a refused `RCPT` leaves a
    /// transaction half done; a new session starts clean).
    async fn send_direct(&mut self, message: &Message) -> Result<(), EffectError> {
        let Connection::Direct {
            settings,
            tls,
            credentials,
            open: slot,
        } = &mut self.connection
        else {
            unreachable!("only called for a direct connection");
        };
        let exchange = async {
            let mut session = match slot.take() {
                Some(session) => session,
                None => open(settings, tls.as_ref(), credentials.as_ref()).await?,
            };
            match session.send(message.envelope(), &message.formatted()).await {
                Ok(_) => {
                    *slot = Some(session);
                    Ok(())
                }
                Err(error) => {
                    session.abort().await;
                    Err(classify(&error))
                }
            }
        };
        match tokio::time::timeout(settings.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => {
                *slot = None;
                Err(EffectError::Transient(format!(
                    "no answer from {}:{} within {:?}",
                    settings.host, settings.port, settings.timeout
                )))
            }
        }
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
        match &self.connection {
            Connection::Pooled(transport) => transport
                .send(message)
                .await
                .map(drop)
                .map_err(|e| classify(&e)),
            Connection::Direct { .. } => self.send_direct(&message).await,
        }
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
        assert!(Smtp::new(&bad).is_err_and(|e| e.key.contains("from_address")));
    }
}
