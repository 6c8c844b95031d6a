//! The SMTP sender against the local stack's Mailpit: an email arrives with both parts; a server
//! that cannot be reached is a transient failure (the stage retries), an address that can never
//! work a permanent one (the stage dead-letters it).

use std::time::Duration;

use clinic::endpoints::Endpoints;
use clinic::streams::effect::{Effect as _, EffectError};
use clinic_notifications::smtp::{Email, Smtp, SmtpSettings};

fn settings(endpoints: &Endpoints) -> SmtpSettings {
    SmtpSettings {
        host: endpoints.smtp_host.clone(),
        port: endpoints.smtp_port,
        from_name: "Clinic Tests".into(),
        from_address: "tests@clinic.local".into(),
        timeout: Duration::from_secs(5),
        ..SmtpSettings::default()
    }
}

fn email(to: &str) -> Email {
    let token = clinic::testkit::unique("smtp");
    Email {
        to: to.to_owned(),
        subject: format!("Welcome to Riverside Clinic {token}"),
        text: "Hello,\nyour clinic account is ready.".into(),
        html: "<p>Hello,</p><p>your clinic account is <b>ready</b>.</p>".into(),
    }
}

#[tokio::test]
async fn an_email_reaches_mailpit_with_both_parts() {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let mut smtp = Smtp::new(&settings(&endpoints)).expect("settings");
    let sent = email("patient@example.org");
    smtp.perform(&sent).await.expect("sent");
    let received = clinic::smoke::mail::await_message(&endpoints.mailpit_url, &sent.subject)
        .await
        .expect("in Mailpit (is the stack up?)");
    assert_eq!(received.to.len(), 1);
    assert_eq!(received.to[0].address, "patient@example.org");
    assert_eq!(received.text.trim_end(), sent.text);
    assert_eq!(received.html.trim_end(), sent.html);
}

#[tokio::test]
async fn an_unreachable_server_is_transient_and_a_bad_address_permanent() {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut away = Smtp::new(&SmtpSettings {
        port: closed,
        ..settings(&endpoints)
    })
    .expect("settings");
    let failed = away.perform(&email("patient@example.org")).await;
    assert!(
        matches!(failed, Err(EffectError::Transient(_))),
        "{failed:?}"
    );
    let mut smtp = Smtp::new(&settings(&endpoints)).expect("settings");
    let failed = smtp.perform(&email("not an address")).await;
    assert!(
        matches!(failed, Err(EffectError::Permanent(ref m)) if m.contains("recipient")),
        "{failed:?}"
    );
}
