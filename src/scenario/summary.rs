//! What the story left, printed readably: the demo clinic's gatekeeper rows, the clinic
//! collections, the run's emails, and each processor's key metrics from its admin endpoint.

use std::collections::BTreeMap;

use bson::{Bson, Document, doc};

use super::Story;
use super::client::all;
use crate::smoke::mail::messages;

/// The processors' admin endpoints as `scripts/demo` starts them.
const ADMIN_PORTS: [(&str, u16); 4] = [
    ("permissions", 9101),
    ("migrations", 9102),
    ("deletions", 9103),
    ("notifications", 9104),
];

fn keys(document: &Document, field: &str) -> String {
    match document.get(field) {
        Some(Bson::Document(d)) => d.keys().cloned().collect::<Vec<_>>().join(","),
        Some(Bson::Array(a)) => a
            .iter()
            .filter_map(Bson::as_str)
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    }
}

fn text<'a>(document: &'a Document, field: &str) -> &'a str {
    document.get_str(field).unwrap_or("-")
}

pub(super) async fn print(story: &Story) -> anyhow::Result<()> {
    println!();
    println!(
        "What the story left (clinic {}, {}):",
        story.name, story.clinic_id
    );
    let clinic = doc! { "clinicId": story.clinic };

    println!("\n  gatekeeper.patient_permissions / clinician_permissions of the clinic");
    println!(
        "    {:<36} {:<28} collection",
        "userId", "permissions / roles"
    );
    for (collection, field) in [
        ("patient_permissions", "permissions"),
        ("clinician_permissions", "roles"),
    ] {
        for row in all(&story.gatekeeper, collection, clinic.clone()).await? {
            println!(
                "    {:<36} {:<28} {collection}",
                text(&row, "userId"),
                keys(&row, field)
            );
        }
    }

    println!("\n  clinic collections (documents in all)");
    let mut counts = Vec::new();
    for name in [
        "clinics",
        "clinicians",
        "patients",
        "patient_invites",
        "migrations",
        "patient_deletions",
    ] {
        let count = story
            .clinic_db
            .collection::<Document>(name)
            .count_documents(doc! {})
            .await?;
        counts.push(format!("{name} {count}"));
    }
    println!("    {}", counts.join(" · "));
    println!("  the clinic's clinicians");
    for member in all(&story.clinic_db, "clinicians", clinic.clone()).await? {
        let who = member.get_str("userId").map_or_else(
            |_| format!("invite {}", text(&member, "inviteId")),
            str::to_owned,
        );
        println!(
            "    {:<20} {:<16} {:<28} rolesUpdates {}",
            text(&member, "name"),
            who,
            keys(&member, "roles"),
            member.get_array("rolesUpdates").map_or(0, Vec::len)
        );
    }
    println!("  the clinic's patients");
    for patient in all(&story.clinic_db, "patients", clinic.clone()).await? {
        println!(
            "    {:<12} {:<36} {:<28} {}",
            text(&patient, "fullName"),
            text(&patient, "userId"),
            keys(&patient, "permissions"),
            if patient.get_datetime("lastUploadReminderTime").is_ok() {
                "upload reminder sent"
            } else {
                ""
            }
        );
    }
    if let Some(legacy) = story.legacy_clinic {
        let moved = story
            .clinic_db
            .collection::<Document>("patients")
            .count_documents(doc! { "clinicId": legacy, "isMigrated": true })
            .await?;
        println!("  the legacy clinic: {moved} migrated patients");
    }

    println!("\n  emails of this run in Mailpit (subject → recipients)");
    let mut by_subject: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for message in messages(
        &story.endpoints.mailpit_url,
        &format!("subject:{}", story.suffix),
        1_000,
    )
    .await?
    {
        by_subject
            .entry(message.subject.clone())
            .or_default()
            .extend(message.to.into_iter().map(|a| a.address));
    }
    for (subject, to) in &by_subject {
        let shown = if to.len() > 2 {
            format!("{} recipients", to.len())
        } else {
            to.join(", ")
        };
        println!("    {subject:<68} → {shown}");
    }

    println!("\n  processors (from their admin endpoints)");
    println!(
        "    {:<14} {:>10} {:>11} {:>5} {:>5} {:>12}",
        "processor", "records in", "records out", "DLQ", "lag", "emails sent"
    );
    let http = reqwest::Client::new();
    for (name, port) in ADMIN_PORTS {
        let body = match http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => {
                println!("    {name:<14} (admin endpoint :{port} not reachable)");
                continue;
            }
        };
        // Whole numbers; `+ 0.0` turns the empty sum's -0 into 0.
        let sum = |metric: &str| -> String {
            let total: f64 = body
                .lines()
                .filter(|l| l.starts_with(metric))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            format!("{:.0}", total + 0.0)
        };
        println!(
            "    {name:<14} {:>10} {:>11} {:>5} {:>5} {:>12}",
            sum("clinic_streams_records_in_total"),
            sum("clinic_streams_records_out_total"),
            sum("clinic_streams_dlq_records_total"),
            sum("clinic_streams_consumer_lag_records"),
            sum("clinic_effects_performed_total"),
        );
    }
    Ok(())
}
