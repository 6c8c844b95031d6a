//! `clinic smoke`: runs every check and prints what each sent and got back.

use std::fmt::Debug;

use super::{avro, mail, sink};
use crate::endpoints::Endpoints;

/// Runs the three checks in turn, printing a line per check and the details under it.
///
/// # Errors
/// When any check fails (after all have run), naming the failed ones.
pub async fn run(endpoints: &Endpoints) -> anyhow::Result<()> {
    let mut failed = Vec::new();

    println!(
        "Avro: schema registry ({}) + Kafka ({})",
        endpoints.schema_registry_url(),
        endpoints.kafka_brokers
    );
    match avro::round_trip(endpoints).await {
        Ok(r) => {
            let ok = r.sent == r.received && r.schema_id == r.registered_id;
            println!(
                "  {} record {} decoded back {} in {:.0?}",
                mark(ok),
                r.sent.id,
                if ok { "unchanged" } else { "CHANGED" },
                r.elapsed
            );
            println!(
                "     schema id {} framed as {:02x?} (the registry's id for the subject: {}) on topic {}",
                r.schema_id, r.frame, r.registered_id, r.topic
            );
            if !ok {
                failed.push("avro");
                show("sent", &r.sent);
                show("received", &r.received);
            }
        }
        Err(error) => fail(&mut failed, "avro", &error),
    }

    println!(
        "Sink: Kafka Connect ({}) MongoDB sink connector -> MongoDB ({})",
        endpoints.connect_url, endpoints.mongo_uri
    );
    match sink::round_trip(endpoints).await {
        Ok(r) => {
            let ok = r.sent == r.received;
            println!(
                "  {} connector {} wrote {} to {} in {:.1?}",
                mark(ok),
                r.connector,
                r.received.id,
                r.namespace,
                r.elapsed
            );
            if !ok {
                failed.push("sink");
                show("sent", &r.sent);
                show("received", &r.received);
            }
        }
        Err(error) => fail(&mut failed, "sink", &error),
    }

    println!(
        "Mail: SMTP ({}:{}) -> Mailpit ({})",
        endpoints.smtp_host, endpoints.smtp_port, endpoints.mailpit_url
    );
    match mail::round_trip(endpoints).await {
        Ok(r) => {
            let ok = r.received.subject == r.subject
                && r.received.text.trim_end() == r.text
                && r.received.html.trim_end() == r.html
                && r.received.to.iter().any(|a| a.address == r.to);
            println!(
                "  {} {:?} to {} arrived as message {} in {:.0?}",
                mark(ok),
                r.subject,
                r.to,
                r.received.id,
                r.elapsed
            );
            if !ok {
                failed.push("mail");
                show("received", &r.received);
            }
        }
        Err(error) => fail(&mut failed, "mail", &error),
    }

    if failed.is_empty() {
        println!("All checks passed.");
        Ok(())
    } else {
        anyhow::bail!("smoke checks failed: {}", failed.join(", "))
    }
}

fn mark(ok: bool) -> &'static str {
    if ok { "ok " } else { "FAIL" }
}

fn show(label: &str, value: &impl Debug) {
    println!("     {label}: {value:?}");
}

fn fail(failed: &mut Vec<&'static str>, check: &'static str, error: &anyhow::Error) {
    println!("  FAIL {error:#}");
    failed.push(check);
}
