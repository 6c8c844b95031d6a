//! On the local stack: the `clinic-notifications` binary (processor and effect stage) against
//! Kafka, the registry and a Mailpit of its own (the stack's binary on free ports, so chaos,
//! rejected recipients and an outage touch no other test):
//! - the eight emails arrive once each from two replicas, with recipient, subject, both parts
//!   and variables (the account email also to an address added later, a reminder also from a
//!   replace, nothing for a `copy.existing` re-snapshot), while Mailpit answers 30 % of `RCPT TO` with a 451; a repeated request is sent once; an
//!   unknown template and a recipient Mailpit refuses (550) are dead-lettered;
//! - a burst of 500 requests with the processor SIGKILLed twice and Mailpit away for 30 s:
//!   every email arrives, and no more are repeated than kills (the one in flight each time);
//! - the Tidepool mailer sender: the CloudEvents on the topic match the mailer's contract.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use clinic::cdc::{ChangeEvent, Operation};
use clinic::email::EmailRequest;
use clinic::endpoints::Endpoints;
use clinic::smoke::mail::MailpitMessage;
use clinic::streams::Processor as _;
use clinic::streams::codec::AvroCodec;
use clinic::testkit::{self, Spawned};
use clinic_notifications::processor::{Notifications, SENT, stage};
use clinic_notifications::sender::MailerData;
use rdkafka::ClientConfig;
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::mailpit::Mailpit;

const BINARY: &str = env!("CARGO_BIN_EXE_clinic-notifications");

/// The processor's topics under a fresh prefix: one partition for the DLQ, two for the rest
/// (changelogs as many as the inputs, the done log as many as the outbox).
async fn topics(endpoints: &Endpoints, what: &str, extra: &[&str]) -> String {
    let prefix = format!("{}.", testkit::unique(what));
    let mut names = testkit::topics_of(
        &Notifications::new(Default::default(), Duration::from_secs(86_400)).topology(),
    );
    names.push(SENT.to_owned());
    names.extend(extra.iter().map(|t| (*t).to_owned()));
    let topics: Vec<(&str, i32)> = names
        .iter()
        .map(|t| (t.as_str(), if t.ends_with(".dlq") { 1 } else { 2 }))
        .collect();
    testkit::create_topics(endpoints, &prefix, &topics)
        .await
        .expect("topics");
    prefix
}

fn start(
    endpoints: &Endpoints,
    prefix: &str,
    mailpit: Option<&Mailpit>,
    log: &Path,
    env: &[(&str, &str)],
) -> Spawned {
    let port = mailpit.map(|m| m.smtp_port.to_string()).unwrap_or_default();
    let mut all: Vec<(&str, &str)> = vec![
        ("CLINIC__SMTP__HOST", "127.0.0.1"),
        ("CLINIC__SMTP__TIMEOUT", "5s"),
        ("CLINIC__STREAMS__MAX_BACKOFF", "1s"),
        (
            "CLINIC__NOTIFICATIONS__WEB_URL",
            "https://clinic.example.org",
        ),
    ];
    if mailpit.is_some() {
        all.push(("CLINIC__SMTP__PORT", &port));
    }
    all.extend_from_slice(env);
    Spawned::start(
        Path::new(BINARY),
        endpoints,
        prefix,
        log.to_owned(),
        "info",
        &all,
    )
}

fn insert(coll: &str, document: &Document) -> ChangeEvent {
    let id = document.get("_id").cloned().expect("_id");
    let mut event = testkit::change(Operation::Insert, coll, id, Some(document.clone()));
    event.source.wall_time = Some(DateTime::now());
    event
}

fn update(coll: &str, document: &Document, fields: Document, token: &str) -> ChangeEvent {
    let id = document.get("_id").cloned().expect("_id");
    let mut event = testkit::change(Operation::Update, coll, id, Some(document.clone()));
    event.updated_fields = fields;
    event.source.resume_token = Some(doc! { "_data": token });
    event.source.wall_time = Some(DateTime::now());
    event
}

async fn publish_requests(endpoints: &Endpoints, prefix: &str, requests: &[EmailRequest]) {
    let codec = AvroCodec::new(&endpoints.schema_registry_url());
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &endpoints.kafka_brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for request in requests {
        let record = request.record();
        let topic = format!("{prefix}{}", record.topic);
        let value = codec
            .encode(&topic, record.value.as_ref().expect("a value"))
            .await
            .expect("encoded");
        producer
            .send(
                FutureRecord::to(&topic).key(&record.key).payload(&value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
    }
}

fn request(id: &str, template: &str, to: &str, variables: &[(&str, &str)]) -> EmailRequest {
    EmailRequest {
        id: id.into(),
        template: template.into(),
        recipient_email: Some(to.into()),
        recipient_user_id: None,
        variables: variables
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        requested_ms: DateTime::now().timestamp_millis(),
    }
}

/// Waits until Mailpit holds `count` messages for the run, and the effect stage has committed
/// past everything in the outbox (so a late duplicate would be there too).
async fn await_received(
    endpoints: &Endpoints,
    prefix: &str,
    mailpit: &Mailpit,
    token: &str,
    count: usize,
) -> Vec<MailpitMessage> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let received = mailpit.received(token).await;
        if received.len() >= count {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} emails arrived: {:?}",
            received.len(),
            received
                .iter()
                .map(|m| (&m.to[0].address, &m.subject))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let group = format!("{prefix}notifications-effects");
    let outbox = format!("{prefix}{}", stage().requests);
    testkit::await_consumed(
        &endpoints.kafka_brokers,
        &group,
        &outbox,
        Duration::from_secs(60),
    );
    mailpit.received(token).await
}

fn dead_letter_reasons(endpoints: &Endpoints, prefix: &str) -> Vec<String> {
    testkit::read_topic(
        &endpoints.kafka_brokers,
        &format!("{prefix}notifications.dlq"),
    )
    .iter()
    .map(|m| {
        m.headers()
            .and_then(|h| h.iter().find(|h| h.key == "clinic.error.message"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    })
    .collect()
}

#[tokio::test]
async fn the_eight_emails_arrive_once_each_through_smtp_chaos() {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let prefix = topics(&endpoints, "notif", &[]).await;
    let mailpit = Mailpit::start();
    mailpit.chaos(30).await;
    let token = testkit::unique("n").replace('-', "");
    let at = |who: &str| format!("{who}.{token}@example.org");
    let clinic = ObjectId::new();
    let clinic_doc =
        doc! { "_id": clinic, "name": "Riverside Diabetes Clinic", "admins": ["admin1"] };
    let admin = doc! { "_id": ObjectId::new(), "clinicId": clinic, "userId": "admin1", "name": "Dr. Ana Ortiz", "email": at("admin"), "roles": ["CLINIC_ADMIN"] };
    let member = doc! { "_id": ObjectId::new(), "clinicId": clinic, "userId": "member1", "name": "Sam Clinician", "email": at("member"), "roles": ["CLINIC_MEMBER"] };
    let patient = doc! {
        "_id": ObjectId::new(), "clinicId": clinic, "userId": "patient1", "fullName": "Kim Park",
        "email": at("patient"), "permissions": { "custodian": {}, "view": {} },
    };
    // Custodial patients: one created without an address that gets one later (the account
    // email goes there, and a reminder by a whole-document replace), one whose insert is a
    // source connector's `copy.existing` re-snapshot (mailed nothing).
    let mut added = doc! {
        "_id": ObjectId::new(), "clinicId": clinic, "userId": "patient3", "fullName": "Ray Added",
        "permissions": { "custodian": {}, "view": {} },
    };
    let copied = doc! {
        "_id": ObjectId::new(), "clinicId": clinic, "userId": "patient4", "fullName": "Cy Copied",
        "email": at("copied"), "permissions": { "custodian": {}, "view": {} },
    };
    let snapshot = testkit::change(
        Operation::Snapshot,
        "patients",
        copied.get("_id").cloned().expect("_id"),
        Some(copied.clone()),
    );
    let inserted = insert("patients", &added);
    added.insert("email", at("added"));
    let addressed = update("patients", &added, doc! { "email": at("added") }, "a1");
    added.insert("lastUploadReminderTime", DateTime::now());
    let mut replaced = testkit::change(
        Operation::Replace,
        "patients",
        added.get("_id").cloned().expect("_id"),
        Some(added.clone()),
    );
    replaced.source.resume_token = Some(doc! { "_data": "a2" });
    replaced.source.wall_time = Some(DateTime::now());
    let invite = doc! { "_id": format!("invite{token}"), "clinicId": clinic, "creatorId": "patient2", "profile": { "fullName": "Lee Chan" } };
    let clinician_invite = doc! { "_id": ObjectId::new(), "clinicId": clinic, "inviteId": format!("ci{token}"), "email": at("invitee"), "roles": ["CLINIC_MEMBER"] };
    let events = vec![
        ("clinic.patients", snapshot),
        ("clinic.clinics", insert("clinics", &clinic_doc)),
        ("clinic.clinicians", insert("clinicians", &admin)),
        ("clinic.clinicians", insert("clinicians", &member)),
        ("clinic.clinicians", insert("clinicians", &clinician_invite)),
        ("clinic.patients", insert("patients", &patient)),
        (
            "clinic.patients",
            update(
                "patients",
                &patient,
                doc! { "lastUploadReminderTime": DateTime::now() },
                "r2",
            ),
        ),
        ("clinic.patient_invites", insert("patient_invites", &invite)),
        ("clinic.patients", inserted),
        ("clinic.patients", addressed),
        ("clinic.patients", replaced),
    ];
    testkit::publish_changes(&endpoints, &prefix, &events)
        .await
        .expect("published");
    let migrate = request(
        &format!("migration:{token}:migrate_patient"),
        "migrate_patient",
        &at("legacy-patient"),
        &[
            ("ClinicName", "Riverside Diabetes Clinic"),
            ("LegacyClinicianName", "Dr. Lou Ward"),
        ],
    );
    publish_requests(
        &endpoints,
        &prefix,
        &[
            migrate.clone(),
            migrate,
            request(
                &format!("m:{token}:done"),
                "clinic_migration_complete",
                &at("legacy"),
                &[("ClinicName", "Riverside Diabetes Clinic")],
            ),
            request(
                &format!("m:{token}:x"),
                "no_such_template",
                &at("nobody"),
                &[],
            ),
            request(
                &format!("m:{token}:bounce"),
                "clinic_migration_complete",
                &format!("bounce.{token}@rejected.test"),
                &[("ClinicName", "R")],
            ),
        ],
    )
    .await;

    // Two replicas: each reads the clinics, clinicians and users whole (global tables) and one
    // of the two partitions of every trigger topic.
    let logs =
        ["a", "b"].map(|r| std::env::temp_dir().join(format!("{token}-notifications-{r}.log")));
    let processors = [("replica-a", &logs[0]), ("replica-b", &logs[1])].map(|(id, log)| {
        start(
            &endpoints,
            &prefix,
            Some(&mailpit),
            log,
            &[("CLINIC__STREAMS__INSTANCE_ID", id)],
        )
    });
    // The promotion comes once the admin's record has been read (as in life, where it is old):
    // the clinicians topic's partitions are read side by side, and the email names the updater.
    clinic::smoke::mail::await_message(
        &mailpit.url(),
        "Your clinic Riverside Diabetes Clinic is ready on Tidepool",
    )
    .await
    .expect("clinic_created");
    let promotion = update(
        "clinicians",
        &member,
        doc! { "roles": ["CLINIC_ADMIN"], "rolesUpdates.0": { "roles": ["CLINIC_ADMIN"], "updatedBy": "admin1" } },
        "r1",
    );
    testkit::publish_changes(&endpoints, &prefix, &[("clinic.clinicians", promotion)])
        .await
        .expect("published");
    await_received(&endpoints, &prefix, &mailpit, &token, 10).await;
    // Every change read, and every email it asked for sent: the re-snapshot's would be here.
    let group = Notifications::new(Default::default(), Duration::from_secs(86_400))
        .topology()
        .group_id();
    let (brokers, group, patients) = (
        endpoints.kafka_brokers.clone(),
        format!("{prefix}{group}"),
        format!("{prefix}clinic.patients"),
    );
    tokio::task::spawn_blocking(move || {
        testkit::await_consumed(&brokers, &group, &patients, Duration::from_secs(60));
    })
    .await
    .expect("the patients read");
    let received = await_received(&endpoints, &prefix, &mailpit, &token, 10).await;
    for processor in processors {
        let (status, log_text) = processor.stop();
        assert!(status.success(), "exit {status}: {log_text}");
        assert!(log_text.contains("Global tables ready."), "{log_text}");
    }

    let by_recipient: BTreeMap<String, Vec<&MailpitMessage>> =
        received.iter().fold(BTreeMap::new(), |mut map, m| {
            map.entry(m.to[0].address.clone()).or_default().push(m);
            map
        });
    let subjects: BTreeMap<&str, Vec<&str>> = by_recipient
        .iter()
        .map(|(to, ms)| {
            let mut subjects: Vec<&str> = ms.iter().map(|m| m.subject.as_str()).collect();
            subjects.sort_unstable();
            (to.split('.').next().unwrap_or_default(), subjects)
        })
        .collect();
    let expected: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        (
            "added",
            vec![
                "Riverside Diabetes Clinic asks you to upload your data",
                "Riverside Diabetes Clinic created a Tidepool account for you",
            ],
        ),
        (
            "admin",
            vec![
                "Lee Chan invited Riverside Diabetes Clinic to see their data",
                "Your clinic Riverside Diabetes Clinic is ready on Tidepool",
            ],
        ),
        (
            "invitee",
            vec!["You are invited to join Riverside Diabetes Clinic on Tidepool"],
        ),
        (
            "legacy",
            vec!["Riverside Diabetes Clinic is ready: your patients have moved"],
        ),
        (
            "legacy-patient",
            vec!["Your data is now shared with Riverside Diabetes Clinic"],
        ),
        (
            "member",
            vec!["Your permissions at Riverside Diabetes Clinic have changed"],
        ),
        (
            "patient",
            vec![
                "Riverside Diabetes Clinic asks you to upload your data",
                "Riverside Diabetes Clinic created a Tidepool account for you",
            ],
        ),
    ]);
    // Each email once: a repeat would show as a second equal subject.
    assert_eq!(subjects, expected);
    let account = by_recipient[&at("patient")]
        .iter()
        .find(|m| m.subject.contains("account"))
        .expect("account email");
    assert!(account.text.contains("Hello Kim Park"), "{}", account.text);
    assert!(account.text.contains(&format!(
        "https://clinic.example.org/claim-account?clinicId={}&userId=patient1",
        clinic.to_hex()
    )));
    assert!(
        account
            .html
            .contains("<strong>Riverside Diabetes Clinic</strong>")
    );
    let invited = received
        .iter()
        .find(|m| m.subject.contains("invited Riverside"))
        .expect("invitation");
    assert_eq!(
        invited.subject,
        "Lee Chan invited Riverside Diabetes Clinic to see their data"
    );
    assert_eq!(invited.to[0].address, at("admin"));
    let invitation = by_recipient[&at("invitee")][0];
    assert!(
        invitation.text.contains(&format!(
            "https://clinic.example.org/clinic-invite?clinicId={}&inviteId=ci{token}",
            clinic.to_hex()
        )),
        "{}",
        invitation.text
    );
    let member_mail = by_recipient[&at("member")][0];
    assert!(
        member_mail
            .text
            .contains("Dr. Ana Ortiz changed your permissions")
    );

    let reasons = dead_letter_reasons(&endpoints, &prefix);
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("unknown template")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("SMTP 5")), "{reasons:?}");
    for log in logs {
        let _ = std::fs::remove_file(log);
    }
}

#[tokio::test]
async fn a_burst_through_two_kills_and_a_mail_server_outage_repeats_at_most_the_emails_in_flight() {
    const BURST: usize = 500;
    let endpoints = Endpoints::from_env().expect("endpoints");
    let prefix = topics(&endpoints, "notif-burst", &[]).await;
    let mut mailpit = Mailpit::start();
    let token = testkit::unique("b").replace('-', "");
    let requests: Vec<EmailRequest> = (0..BURST)
        .map(|i| {
            request(
                &format!("burst:{token}:{i}"),
                "clinic_migration_complete",
                &format!("p{i:03}.{token}@example.org"),
                &[("ClinicName", "Burst Clinic")],
            )
        })
        .collect();
    publish_requests(&endpoints, &prefix, &requests).await;
    let log = std::env::temp_dir().join(format!("{token}-notifications.log"));
    let mut kills = 0;
    for threshold in [BURST / 5, BURST / 2] {
        let processor = start(&endpoints, &prefix, Some(&mailpit), &log, &[]);
        let deadline = Instant::now() + Duration::from_secs(120);
        while mailpit.received(&token).await.len() < threshold {
            assert!(Instant::now() < deadline, "stuck before {threshold}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        processor.kill();
        kills += 1;
    }
    // Back, with the mail server away for 30 s: transient failures, retried, nothing lost.
    let processor = start(&endpoints, &prefix, Some(&mailpit), &log, &[]);
    mailpit.kill();
    tokio::time::sleep(Duration::from_secs(30)).await;
    mailpit.resume();
    let received = await_received(&endpoints, &prefix, &mailpit, &token, BURST).await;
    let (status, log_text) = processor.stop();
    assert!(status.success(), "exit {status}: {log_text}");
    let mut per_address: BTreeMap<&str, usize> = BTreeMap::new();
    for message in &received {
        *per_address
            .entry(message.to[0].address.as_str())
            .or_default() += 1;
    }
    let repeated: usize = per_address.values().map(|n| n - 1).sum();
    println!(
        "burst: {} received for {BURST} requests, {repeated} repeated, {kills} kills",
        received.len()
    );
    assert_eq!(per_address.len(), BURST, "every email arrived");
    assert!(repeated <= kills, "{repeated} repeated with {kills} kills");
    assert!(dead_letter_reasons(&endpoints, &prefix).is_empty());
    let _ = std::fs::remove_file(&log);
}

#[tokio::test]
async fn the_mailer_sender_publishes_tidepool_mailer_cloud_events() {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let prefix = topics(&endpoints, "notif-mailer", &["emails"]).await;
    let token = testkit::unique("m").replace('-', "");
    let to = format!("legacy.{token}@example.org");
    let asked = request(
        &format!("m:{token}"),
        "clinic_migration_complete",
        &to,
        &[("ClinicName", "Riverside")],
    );
    // One the mailer keeps under another name (hydrophone's, in Tidepool).
    let account = request(
        &format!("a:{token}"),
        "custodial_account_created",
        &to,
        &[
            ("ClinicName", "Riverside"),
            ("PatientName", "Kim Park"),
            ("ClinicId", "65a1b2c3d4e5f60718293a4b"),
            ("UserId", "a1b2c3d4e5"),
        ],
    );
    publish_requests(&endpoints, &prefix, &[asked.clone(), account]).await;
    let log = std::env::temp_dir().join(format!("{token}-notifications.log"));
    let processor = start(
        &endpoints,
        &prefix,
        None,
        &log,
        &[
            ("CLINIC__SENDER__KIND", "mailer"),
            ("CLINIC__MAILER__SOURCE", "clinic-notifications-test"),
            (
                "CLINIC__MAILER__TEMPLATES__CUSTODIAL_ACCOUNT_CREATED",
                "signup_custodial_new_clinic_experience_confirmation",
            ),
        ],
    );
    let topic = format!("{prefix}emails");
    let deadline = Instant::now() + Duration::from_secs(120);
    let events = loop {
        let events = testkit::read_topic(&endpoints.kafka_brokers, &topic);
        if events.len() >= 2 {
            break events;
        }
        assert!(Instant::now() < deadline, "no mailer event");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (status, log_text) = processor.stop();
    assert!(status.success(), "exit {status}: {log_text}");
    assert_eq!(events.len(), 2);
    let data_of = |event: &rdkafka::message::OwnedMessage| -> MailerData {
        serde_json::from_slice(event.payload().expect("data")).expect("mailer data")
    };
    let renamed = events
        .iter()
        .map(data_of)
        .find(|d| d.variables.contains_key("UserId"))
        .expect("the account email");
    assert_eq!(
        renamed.template,
        "signup_custodial_new_clinic_experience_confirmation"
    );
    let event = events
        .iter()
        .find(|e| data_of(e).template == "clinic_migration_complete")
        .expect("the migration email");
    assert_eq!(
        event.key(),
        Some(to.as_bytes()),
        "keyed by the recipient, as go-common's MailerClient"
    );
    let headers: BTreeMap<String, String> = event
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(headers["ce_specversion"], "1.0");
    assert_eq!(headers["ce_type"], "email_template:send");
    assert_eq!(headers["ce_source"], "clinic-notifications-test");
    assert_eq!(headers["ce_id"], asked.id);
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        bson::DateTime::parse_rfc3339_str(&headers["ce_time"]).is_ok(),
        "{headers:?}"
    );
    let data = data_of(event);
    assert_eq!(
        data,
        MailerData {
            recipient: to,
            template: "clinic_migration_complete".into(),
            variables: BTreeMap::from([("ClinicName".into(), "Riverside".into())]),
        }
    );
    let _ = std::fs::remove_file(&log);
}
