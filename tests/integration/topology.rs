//! The whole suite's dataflow as the repository stands: `topics.yaml`, `connectors/` and what
//! each built processor declares in code agree (a processor reading or writing a topic
//! `topics.yaml` does not list, or that it does not name the processor for; a topic that names a
//! processor the processor does not touch; a sink topic with no connector).

use std::collections::BTreeMap;

use clinic::ops::topology::{Dataflow, declared};
use clinic::streams::Processor as _;

#[test]
fn topics_yaml_connectors_and_the_processors_code_agree() {
    let root = clinic::testkit::repo_root(0);
    let dataflow = Dataflow::load(
        &root.join("topics.yaml"),
        &[&root.join("connectors"), &root.join("connectors/source")],
    )
    .expect("files load");
    let deletions_inputs = clinic_deletions::config::Inputs {
        // The Debezium user table is opt-in and names a deployment's own topic.
        user_table: None,
        ..clinic_deletions::config::Inputs::default()
    };
    let processors = [
        clinic_permissions::processor::Permissions::new(Default::default()).topology(),
        clinic_deletions::processor::Deletions::new(deletions_inputs).topology(),
        clinic_migrations::processor::Migrations::new(Default::default(), Default::default())
            .topology(),
        clinic_notifications::processor::Notifications::new(
            Default::default(),
            std::time::Duration::from_secs(86_400),
        )
        .topology(),
    ];
    let mut declared: BTreeMap<String, (Vec<String>, Vec<String>)> = processors
        .iter()
        .map(|t| (t.name.clone(), declared(t)))
        .collect();
    // The notifications binary also runs its effect stage: it reads the outbox and the done
    // log, and writes the done log and the DLQ.
    let stage = clinic_notifications::processor::stage();
    let (reads, writes) = declared.get_mut("notifications").expect("declared");
    reads.extend([stage.requests, stage.done.clone()]);
    writes.extend([stage.done, stage.dlq]);

    assert_eq!(dataflow.problems(&declared), Vec::<String>::new());
}

#[test]
fn a_processor_disagreeing_with_topics_yaml_is_reported() {
    let root = clinic::testkit::repo_root(0);
    let dataflow =
        Dataflow::load(&root.join("topics.yaml"), &[&root.join("connectors")]).expect("files load");
    // permissions as if it had stopped reading clinicians and started writing an unlisted topic.
    let reads = vec![
        "clinic.patients".to_owned(),
        "permissions.patients.changelog".to_owned(),
        "permissions.clinicians.changelog".to_owned(),
    ];
    let writes = vec![
        "sink.gatekeeper.patient_permissions".to_owned(),
        "sink.gatekeeper.clinician_permissions".to_owned(),
        "permissions.dlq".to_owned(),
        "permissions.patients.changelog".to_owned(),
        "permissions.clinicians.changelog".to_owned(),
        "permissions.audit".to_owned(),
    ];
    let declared = BTreeMap::from([("permissions".to_owned(), (reads, writes))]);

    let problems = dataflow.problems(&declared);
    assert_eq!(
        problems,
        vec![
            "processor permissions writes permissions.audit, which topics.yaml does not list"
                .to_owned(),
            "topics.yaml names permissions as a consumer of clinic.clinicians, but the processor does not read it".to_owned(),
        ]
    );
}
