//! Emails per second into Mailpit, and the latency from a change event's commit to Mailpit
//! accepting its email: the notifications processor and its effect stage (in-process,
//! exactly-once, SMTP) on the local stack. Prints figures; asserts nothing.
//!
//! Run: `taskset -c 1 cargo bench --bench notifications [-- <emails>]` (default 1,000).
//! 1. Burst: `<emails>` inserts of custodial patients with an address are published at once,
//!    and the clock runs from the first publish to the last email in Mailpit.
//! 2. Latency: 200 more, one every 50 ms (so none waits behind another); per email, from the
//!    broker's acknowledgement of its change event to Mailpit's `Created` time, p50 and p99.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use clinic::cdc::{ChangeEvent, Operation};
use clinic::endpoints::Endpoints;
use clinic::streams::Processor as _;
use clinic::streams::kafka::Health;
use clinic::testkit;
use clinic_notifications::config::Settings;
use clinic_notifications::processor::{Notifications, SENT};

const PACED: usize = 200;

fn insert(coll: &str, document: &Document) -> ChangeEvent {
    let id = document.get("_id").cloned().expect("_id");
    let mut event = testkit::change(Operation::Insert, coll, id, Some(document.clone()));
    event.source.wall_time = Some(DateTime::now());
    event
}

fn patient(clinic: ObjectId, token: &str, i: usize) -> Document {
    doc! {
        "_id": ObjectId::new(), "clinicId": clinic, "userId": format!("u{i:05}"),
        "fullName": format!("Patient {i}"), "email": format!("p{i:05}.{token}@example.org"),
        "permissions": { "custodian": {} },
    }
}

#[derive(serde::Deserialize)]
struct Search {
    messages: Vec<Summary>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Summary {
    to: Vec<Address>,
    created: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Address {
    address: String,
}

/// Address → when Mailpit accepted the email (epoch ms), for the run's emails.
async fn received(mailpit: &str, token: &str) -> BTreeMap<String, i64> {
    let search: Search = reqwest::Client::new()
        .get(format!("{mailpit}/api/v1/search"))
        .query(&[("query", format!("to:{token}")), ("limit", "10000".into())])
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("Mailpit")
        .json()
        .await
        .expect("search result");
    search
        .messages
        .into_iter()
        .filter_map(|m| {
            let at = DateTime::parse_rfc3339_str(&m.created)
                .ok()?
                .timestamp_millis();
            Some((m.to.first()?.address.clone(), at))
        })
        .collect()
}

async fn await_count(mailpit: &str, token: &str, count: usize) -> BTreeMap<String, i64> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let got = received(mailpit, token).await;
        if got.len() >= count {
            return got;
        }
        assert!(Instant::now() < deadline, "{} of {count} emails", got.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits")
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short list"
    )]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

#[tokio::main]
async fn main() {
    let emails: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000);
    clinic::telemetry::init();
    let endpoints = Endpoints::from_env().expect("endpoints");
    let token = testkit::unique("bench").replace('-', "");
    let prefix = format!("{token}.");
    let topology = Notifications::new(Default::default(), Duration::from_secs(86_400)).topology();
    let mut names = testkit::topics_of(&topology);
    names.push(SENT.to_owned());
    let topics: Vec<(&str, i32)> = names
        .iter()
        .map(|t| {
            // Changelogs as many as the inputs: the processor's tasks are per partition.
            (t.as_str(), if t.ends_with(".dlq") { 1 } else { 3 })
        })
        .collect();
    testkit::create_topics(&endpoints, &prefix, &topics)
        .await
        .expect("topics");
    let mut settings = Settings {
        streams: testkit::runner_config(&endpoints, &prefix),
        ..Settings::default()
    };
    settings.smtp.host.clone_from(&endpoints.smtp_host);
    settings.smtp.port = endpoints.smtp_port;
    let shutdown = Arc::new(AtomicBool::new(false));
    let health = Arc::new(Health::default());
    let running = tokio::spawn(clinic_notifications::app().run_until(
        &settings,
        Arc::clone(&shutdown),
        Arc::clone(&health),
    ));
    while !health.ready.load(Ordering::SeqCst) {
        assert!(
            !running.is_finished(),
            "the processor stopped before it was ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let clinic = ObjectId::new();
    let clinic_doc = doc! { "_id": clinic, "name": "Bench Clinic", "admins": ["bench-admin"] };
    let mut events = vec![("clinic.clinics", insert("clinics", &clinic_doc))];
    events.extend((0..emails).map(|i| {
        (
            "clinic.patients",
            insert("patients", &patient(clinic, &token, i)),
        )
    }));
    let started = Instant::now();
    testkit::publish_changes(&endpoints, &prefix, &events)
        .await
        .expect("published");
    let published = started.elapsed();
    await_count(&endpoints.mailpit_url, &token, emails).await;
    let burst = started.elapsed();
    println!(
        "burst: {emails} emails in {:.2} s from the first publish ({:.0} emails/s; publishing took {:.2} s)",
        burst.as_secs_f64(),
        emails as f64 / burst.as_secs_f64(),
        published.as_secs_f64()
    );

    let mut acknowledged: BTreeMap<String, i64> = BTreeMap::new();
    for i in emails..emails + PACED {
        let document = patient(clinic, &token, i);
        let address = document.get_str("email").expect("email").to_owned();
        testkit::publish_changes(
            &endpoints,
            &prefix,
            &[("clinic.patients", insert("patients", &document))],
        )
        .await
        .expect("published");
        acknowledged.insert(address, now_ms());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let arrived = await_count(&endpoints.mailpit_url, &token, emails + PACED).await;
    let mut latencies: Vec<i64> = acknowledged
        .iter()
        .filter_map(|(address, at)| arrived.get(address).map(|got| got - at))
        .collect();
    latencies.sort_unstable();
    println!(
        "latency (change event acknowledged → Mailpit accepted), {} paced emails: p50 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    println!(
        "RSS at the end (processor, stage and the bench's own clients): {:.0} MiB",
        testkit::rss_mib()
    );
    shutdown.store(true, Ordering::SeqCst);
    running.await.expect("joined").expect("stopped cleanly");
}
