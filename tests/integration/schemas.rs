//! `clinic schemas` against the real registry: plan → apply → plan is empty, a compatible change
//! becomes a new version, an incompatible one is refused with the registry's reason.

use std::path::{Path, PathBuf};

use clinic::ops::PlanError;
use clinic::ops::schemas::{Registry, SchemaAction, SchemasPlan, desired};
use clinic::smoke::unique;

use crate::helpers;

const V1: &str = r#"{"type": "record", "name": "Permission", "namespace": "clinic.test",
  "fields": [{"name": "_id", "type": "string"}, {"name": "upload", "type": "boolean"}]}"#;
const V2_COMPATIBLE: &str = r#"{"type": "record", "name": "Permission", "namespace": "clinic.test",
  "fields": [{"name": "_id", "type": "string"}, {"name": "upload", "type": "boolean"},
             {"name": "note", "type": ["null", "string"], "default": null}]}"#;
const V2_INCOMPATIBLE: &str = r#"{"type": "record", "name": "Permission", "namespace": "clinic.test",
  "fields": [{"name": "_id", "type": "string"}, {"name": "upload", "type": "boolean"},
             {"name": "clinicId", "type": "string"}]}"#;

/// A directory with a `topics.yaml` naming one schema file, under a fresh prefix.
fn workspace(schema: &str) -> (PathBuf, String) {
    let prefix = format!("{}.", unique("schemas"));
    let dir = std::env::temp_dir().join(unique("schemas-dir"));
    std::fs::create_dir_all(dir.join("schemas")).expect("dir");
    std::fs::write(dir.join("schemas/permission.avsc"), schema).expect("schema");
    std::fs::write(
        dir.join("topics.yaml"),
        format!(
            "prefix: \"{prefix}\"\ndefaults: {{ partitions: 1, replication_factor: 1 }}\n\
             topics:\n  sink.permissions: {{ value: {{ format: avro, schema: schemas/permission.avsc }} }}\n"
        ),
    )
    .expect("topics.yaml");
    (dir.join("topics.yaml"), prefix)
}

async fn plan(registry: &Registry, file: &Path) -> SchemasPlan {
    registry
        .plan(&desired(file, None, None).expect("desired"))
        .await
        .expect("plan")
}

#[tokio::test]
async fn plan_apply_plan_registers_once_and_a_compatible_change_becomes_a_new_version() {
    let endpoints = helpers::stack(&["registry"]).await;
    let registry = Registry::new(&endpoints.schema_registry_url());
    let (file, prefix) = workspace(V1);

    let first = plan(&registry, &file).await;
    registry.apply(&first, |_| {}).await.expect("apply");
    let second = plan(&registry, &file).await;
    std::fs::write(
        file.with_file_name("schemas/permission.avsc"),
        V2_COMPATIBLE,
    )
    .expect("edit");
    let evolved = plan(&registry, &file).await;
    registry.apply(&evolved, |_| {}).await.expect("apply v2");
    let last = plan(&registry, &file).await;

    let subject = format!("{prefix}sink.permissions-value");
    assert!(
        first.actions.contains(&SchemaAction::SetCompatibility {
            subject: subject.clone(),
            from: None,
            to: "BACKWARD".into()
        }),
        "{first:?}"
    );
    assert!(first.actions.iter().any(|a| matches!(
        a,
        SchemaAction::Register {
            new_version: false,
            ..
        }
    )));
    assert_eq!(second, SchemasPlan::default());
    assert!(
        matches!(
            evolved.actions.as_slice(),
            [SchemaAction::Register {
                new_version: true,
                ..
            }]
        ),
        "{evolved:?}"
    );
    assert_eq!(last, SchemasPlan::default());
}

#[tokio::test]
async fn an_incompatible_change_is_refused_with_the_registrys_reason() {
    let endpoints = helpers::stack(&["registry"]).await;
    let registry = Registry::new(&endpoints.schema_registry_url());
    let (file, _) = workspace(V1);
    registry
        .apply(&plan(&registry, &file).await, |_| {})
        .await
        .expect("apply v1");
    std::fs::write(
        file.with_file_name("schemas/permission.avsc"),
        V2_INCOMPATIBLE,
    )
    .expect("edit");

    let refused = plan(&registry, &file).await;
    let result = registry.apply(&refused, |_| {}).await;
    let after = plan(&registry, &file).await;

    assert!(
        refused.has_blockers() && !refused.has_changes(),
        "{refused:?}"
    );
    let Err(PlanError::Refused(message)) = result else {
        panic!("expected a refusal, got {result:?}")
    };
    assert!(
        message.contains("Incompatible") && message.contains("clinicId"),
        "{message}"
    );
    assert_eq!(after, refused, "nothing was registered");
}
