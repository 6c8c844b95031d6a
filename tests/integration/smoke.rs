//! Smoke tests of the local stack: the chain every processor relies on works end to end.

use clinic::smoke::{avro, mail, sink};

use crate::helpers;

#[tokio::test]
async fn avro_record_round_trips_through_registry_and_kafka() {
    let endpoints = helpers::stack(&["kafka", "registry"]).await;

    let trip = avro::round_trip(&endpoints).await.expect("Avro round trip");

    assert_eq!(trip.received, trip.sent);
    assert_eq!(trip.frame[0], 0, "Confluent magic byte");
    assert!(trip.schema_id > 0);
    assert_eq!(
        trip.registered_id, trip.schema_id,
        "the id in the frame is the one the registry gave"
    );
}

#[tokio::test]
async fn sink_connector_writes_avro_record_into_mongodb() {
    let endpoints = helpers::stack(&["kafka", "registry", "connect", "mongodb"]).await;

    let trip = sink::round_trip(&endpoints).await.expect("sink round trip");

    assert_eq!(trip.received, trip.sent);
    assert!(trip.namespace.starts_with(sink::SMOKE_DATABASE));
}

#[tokio::test]
async fn email_sent_over_smtp_is_read_back_from_mailpit() {
    let endpoints = helpers::stack(&["smtp", "mailpit"]).await;

    let trip = mail::round_trip(&endpoints).await.expect("mail round trip");

    assert_eq!(trip.received.subject, trip.subject);
    assert_eq!(trip.received.text.trim_end(), trip.text);
    assert_eq!(trip.received.html.trim_end(), trip.html);
    let recipients: Vec<&str> = trip
        .received
        .to
        .iter()
        .map(|a| a.address.as_str())
        .collect();
    assert_eq!(recipients, [trip.to.as_str()]);
}
