//! On the local stack: a migration of 1,000 shared patients through the `clinic-migrations`
//! binary (exactly-once) and the repository's sink connectors into FerretDB. The patients,
//! `perms` and `migrations` collections and the email requests on `notifications.requests`
//! (read_committed) end exactly as computed here from the inputs, once in a clean run and once
//! with the processor SIGKILLed three times mid-migration.

use std::time::{Duration, Instant};

use clinic::endpoints::Endpoints;

use crate::chain::{chain, finish, metrics, start, world};

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_of_a_thousand_patients_reaches_the_databases_exactly() {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let world = world();
    let chain = chain(&endpoints, &world).await;
    let logs = tempfile::tempdir().expect("temp dir");
    let processor = start(&endpoints, &chain, &logs.path().join("run.log"), "500");
    finish(&endpoints, &chain, &world, processor).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_killed_three_times_midway_ends_the_same() {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let world = world();
    let chain = chain(&endpoints, &world).await;
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("run.log");
    // Chunks of 10: the migration takes a hundred steps, so the kills land in the middle.
    let mut processor = start(&endpoints, &chain, &log, "10");
    for kill in 1..=3 {
        // Until this instance has moved shares of its own, then a little longer.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !metrics(&processor)
            .await
            .contains("clinic_migrations_shares_moved_total")
        {
            assert!(Instant::now() < deadline, "kill {kill}: nothing moved");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        let seen = metrics(&processor).await;
        assert!(
            !seen.contains("clinic_migrations_finished_total"),
            "kill {kill}: the migration had finished already; it must be killed midway"
        );
        let moved = seen
            .lines()
            .find(|l| l.starts_with("clinic_migrations_shares_moved_total"))
            .unwrap_or_default()
            .to_owned();
        processor.kill();
        eprintln!("kill {kill}: SIGKILLed after {moved}");
        processor = start(&endpoints, &chain, &log, "10");
    }
    finish(&endpoints, &chain, &world, processor).await;
}
