//! The SMTP sender against the local stack's Mailpit: an email arrives with both parts; a server
//! that cannot be reached is a transient failure (the stage retries), an address that can never
//! work a permanent one (the stage dead-letters it).

use std::time::Duration;

use clinic::endpoints::Endpoints;
use clinic::streams::effect::{Effect as _, EffectError};
use clinic_notifications::smtp::{Email, Smtp, SmtpSettings, TlsMode};

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

/// A CA and a certificate it signs for `localhost`, made with openssl in `dir`: (CA, cert, key).
fn certificates(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Clinic Test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[tokio::test]
async fn starttls_and_implicit_tls_reach_a_server_whose_certificate_a_private_ca_signed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca, cert, key) = certificates(dir.path());
    let (cert, key) = (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    );
    for (tls, require) in [
        (TlsMode::Starttls, "--smtp-require-starttls"),
        (TlsMode::Tls, "--smtp-require-tls"),
    ] {
        let mailpit = crate::mailpit::Mailpit::start_with(&[
            "--smtp-tls-cert",
            &cert,
            "--smtp-tls-key",
            &key,
            require,
        ]);
        let secured = SmtpSettings {
            host: "localhost".into(),
            port: mailpit.smtp_port,
            tls,
            from_name: "Clinic Tests".into(),
            from_address: "tests@clinic.local".into(),
            timeout: Duration::from_secs(5),
            ca_file: Some(ca.clone()),
            ..SmtpSettings::default()
        };
        let mut smtp = Smtp::new(&secured).expect("settings");
        let sent = email("patient@example.org");
        smtp.perform(&sent)
            .await
            .unwrap_or_else(|e| panic!("{tls:?}: {e}"));
        let received = clinic::smoke::mail::await_message(&mailpit.url(), &sent.subject)
            .await
            .expect("in Mailpit");
        assert_eq!(received.text.trim_end(), sent.text, "{tls:?}");
        // Without the CA the server's certificate is not trusted: a failure, retried (it may be
        // fixed by configuration), never a plain-text fallback.
        let mut untrusting = Smtp::new(&SmtpSettings {
            ca_file: None,
            ..secured
        })
        .expect("settings");
        let refused = untrusting.perform(&email("patient@example.org")).await;
        assert!(
            matches!(refused, Err(EffectError::Transient(_))),
            "{tls:?}: {refused:?}"
        );
    }
}
