//! The Helm chart (`helm/clinic`), through Helm itself (`scripts/helm`, built from its Go module):
//! `helm lint --strict` with the default and the CI values, and what `helm template` renders:
//! restricted pods with probes on the admin port and a grace period longer than the drain
//! deadline, each processor at the replicas the values ask for, secrets only by
//! reference, a settings change that rolls the pods, and settings files the binaries accept
//! (each one parsed by the binary's own settings type).

use std::path::Path;
use std::process::Command;

use serde_yaml_ng::Value;

fn helm(args: &[&str]) -> String {
    let root = clinic::testkit::repo_root(0);
    let output = Command::new(root.join("scripts/helm"))
        .args(args)
        .current_dir(&root)
        .output()
        .expect("scripts/helm runs");
    assert!(
        output.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("text")
}

fn render(extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "demo",
        "helm/clinic",
        "--kube-version",
        "1.31.0",
    ];
    args.extend_from_slice(extra);
    let text = helm(&args);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize as _;

fn kind(document: &Value) -> &str {
    document["kind"].as_str().unwrap_or_default()
}

fn name(document: &Value) -> &str {
    document["metadata"]["name"].as_str().unwrap_or_default()
}

#[test]
fn the_chart_lints_strictly_with_the_default_and_the_ci_values() {
    for values in [
        None,
        Some("helm/clinic/ci/ci-values.yaml"),
        Some("helm/clinic/ci/strimzi-values.yaml"),
    ] {
        let mut args = vec!["lint", "--strict", "helm/clinic"];
        if let Some(file) = values {
            args.extend(["-f", file]);
        }
        let out = helm(&args);
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
    let root = clinic::testkit::repo_root(0);
    assert!(root.join("helm/clinic/values.schema.json").exists());
    // A value of the wrong type is refused by values.schema.json.
    let refused = Command::new(root.join("scripts/helm"))
        .args([
            "lint",
            "--strict",
            "helm/clinic",
            "--set",
            "drainDeadlineSeconds=soon",
        ])
        .current_dir(&root)
        .output()
        .expect("runs");
    assert!(!refused.status.success());
}

#[test]
fn every_pod_is_restricted_probed_and_outlives_its_drain_deadline() {
    let documents = render(&["-f", "helm/clinic/ci/ci-values.yaml"]);
    let workloads: Vec<&Value> = documents
        .iter()
        .filter(|d| matches!(kind(d), "Deployment" | "StatefulSet" | "Job"))
        .collect();
    assert_eq!(
        workloads.len(),
        7,
        "the API, four processors, the connectors' watch, the hook"
    );
    for workload in workloads {
        let pod = &workload["spec"]["template"]["spec"];
        let who = name(workload);
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"],
            Value::Bool(true),
            "{who}"
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{who}"
        );
        let mut containers: Vec<&Value> = pod["containers"]
            .as_sequence()
            .expect("containers")
            .iter()
            .collect();
        containers.extend(pod["initContainers"].as_sequence().into_iter().flatten());
        for container in containers {
            let security = &container["securityContext"];
            assert_eq!(
                security["readOnlyRootFilesystem"],
                Value::Bool(true),
                "{who}"
            );
            assert_eq!(
                security["allowPrivilegeEscalation"],
                Value::Bool(false),
                "{who}"
            );
            assert_eq!(security["capabilities"]["drop"][0], "ALL", "{who}");
            for (key, value) in container["env"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|e| Some((e["name"].as_str()?, e)))
            {
                if key.contains("SECRET") || key.contains("PASSWORD") || key.ends_with("__URI") {
                    assert!(
                        value["value"].is_null() && !value["valueFrom"]["secretKeyRef"].is_null(),
                        "{who}: {key} must come from a Secret"
                    );
                }
            }
        }
        if kind(workload) == "Job" {
            assert_eq!(
                workload["metadata"]["annotations"]["helm.sh/hook"],
                "pre-install,pre-upgrade"
            );
            continue;
        }
        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("grace");
        assert!(
            grace > 30,
            "{who}: {grace} s is not longer than the drain deadline"
        );
        let container = &pod["containers"][0];
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"], "/readyz",
            "{who}"
        );
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"], "/healthz",
            "{who}"
        );
        assert_eq!(
            container["readinessProbe"]["httpGet"]["port"], "admin",
            "{who}"
        );
        assert!(
            workload["spec"]["template"]["metadata"]["annotations"]["checksum/settings"]
                .is_string(),
            "{who}: a settings change must roll the pods"
        );
    }
    assert!(
        documents.iter().all(|d| kind(d) != "Secret"),
        "no Secret is rendered"
    );
    for (kind_, present) in [
        ("Ingress", true),
        ("HorizontalPodAutoscaler", true),
        ("ServiceMonitor", true),
    ] {
        assert_eq!(
            documents.iter().any(|d| kind(d) == kind_),
            present,
            "{kind_}"
        );
    }
}

#[test]
fn processors_run_the_replicas_the_values_ask_for() {
    let documents = render(&["-f", "helm/clinic/ci/ci-values.yaml"]);
    let replicas = |who: &str| {
        documents
            .iter()
            .find(|d| kind(d) == "StatefulSet" && name(d) == who)
            .and_then(|d| d["spec"]["replicas"].as_u64())
            .expect("a StatefulSet")
    };
    assert_eq!(replicas("demo-clinic-permissions"), 3);
    // Routed by user and clinic through repartition topics.
    assert_eq!(replicas("demo-clinic-migrations"), 3);
    // Routed by clinic.
    assert_eq!(replicas("demo-clinic-deletions"), 3);
    // Its lookup tables are global tables, read whole by every replica.
    assert_eq!(replicas("demo-clinic-notifications"), 3);
    let disabled = render(&["--set", "processors.migrations.enabled=false"]);
    assert!(!disabled.iter().any(|d| name(d) == "demo-clinic-migrations"));
}

#[test]
fn the_rendered_settings_files_are_accepted_by_the_binaries_settings_types() {
    use clinic::streams::app::Settings as _;
    for values in [None, Some("helm/clinic/ci/ci-values.yaml")] {
        let extra: Vec<&str> = values.map(|f| vec!["-f", f]).unwrap_or_default();
        let documents = render(&extra);
        let settings = documents
            .iter()
            .find(|d| kind(d) == "ConfigMap")
            .expect("the settings ConfigMap");
        let file = |name: &str| -> std::path::PathBuf {
            let text = settings["data"][name]
                .as_str()
                .unwrap_or_else(|| panic!("{name}"));
            let dir = tempfile::tempdir().expect("temp dir").keep();
            let path = dir.join(name);
            std::fs::write(&path, text).expect("written");
            path
        };
        let check = |result: anyhow::Result<()>, name: &str| {
            result.unwrap_or_else(|e| panic!("{name} with {values:?}: {e:#}"));
        };
        let load = |path: &Path| path.to_owned();
        check(
            clinic::settings::load::<clinic_permissions::config::Settings>(Some(&load(&file(
                "permissions.json",
            ))))
            .map(drop),
            "permissions.json",
        );
        check(
            clinic::settings::load::<clinic_deletions::config::Settings>(Some(&file(
                "deletions.json",
            )))
            .map(drop),
            "deletions.json",
        );
        check(
            clinic::settings::load::<clinic_migrations::config::Settings>(Some(&file(
                "migrations.json",
            )))
            .map(drop),
            "migrations.json",
        );
        let notifications: clinic_notifications::config::Settings =
            clinic::settings::load(Some(&file("notifications.json"))).expect("notifications.json");
        notifications
            .validate()
            .expect("valid notifications settings");
        assert!(notifications.smtp.port > 0);
        check(
            clinic::settings::load::<clinic::api::ApiSettings>(Some(&file("api.json"))).map(drop),
            "api.json",
        );
    }
}

#[test]
fn the_shipped_strimzi_resources_are_what_clinic_strimzi_renders_now() {
    let root = clinic::testkit::repo_root(0);
    let topics = clinic::ops::topics::TopicsFile::load(&root.join("topics.yaml")).expect("topics");
    let connectors =
        clinic::ops::connectors::desired(&root.join("connectors")).expect("connectors");
    let rendered = clinic::ops::strimzi::render(
        &topics,
        &connectors,
        &clinic::ops::strimzi::Placeholders::helm(),
    )
    .expect("renders");
    let shipped =
        std::fs::read_to_string(root.join("helm/clinic/files/strimzi.yaml")).expect("shipped");
    assert!(
        shipped == rendered,
        "helm/clinic/files/strimzi.yaml is stale: run `clinic strimzi > helm/clinic/files/strimzi.yaml`"
    );

    let documents = render(&["-f", "helm/clinic/ci/strimzi-values.yaml"]);
    let count = |k: &str| documents.iter().filter(|d| kind(d) == k).count();
    assert_eq!(
        count("KafkaTopic"),
        topics.desired(None).expect("desired").topics.len()
    );
    assert_eq!(count("KafkaConnector"), connectors.len());
    let topic = documents
        .iter()
        .find(|d| {
            kind(d) == "KafkaTopic" && name(d) == "clinic-sink.gatekeeper.patient-permissions"
        })
        .expect("a topic whose name has an underscore");
    assert_eq!(
        topic["spec"]["topicName"],
        "qa1.sink.gatekeeper.patient_permissions"
    );
    assert_eq!(
        topic["metadata"]["labels"]["strimzi.io/cluster"],
        "my-cluster"
    );
    // The connectors read the deployment's topics, and the operator restarts a failed one.
    for connector in documents.iter().filter(|d| kind(d) == "KafkaConnector") {
        let spec = &connector["spec"];
        assert_eq!(spec["autoRestart"]["enabled"], true, "{}", name(connector));
        let topics = spec["config"]["topics"].as_str().expect("topics");
        assert!(topics.starts_with("qa1.sink."), "{topics}");
        assert_eq!(
            spec["config"]["errors.deadletterqueue.topic.name"],
            "qa1.connect.sink.dlq"
        );
    }
    let hook = documents
        .iter()
        .find(|d| kind(d) == "Job")
        .expect("the hook");
    let pod = &hook["spec"]["template"]["spec"];
    assert!(
        pod["initContainers"].is_null(),
        "Strimzi applies topics and connectors"
    );
    assert_eq!(pod["containers"][0]["name"], "schemas");
    // Strimzi restarts failed tasks itself (autoRestart): no watch of the chart's own.
    assert!(
        documents
            .iter()
            .all(|d| !name(d).ends_with("-connectors-watch")),
        "a connectors' watch beside Strimzi"
    );
    // Without Strimzi, none of its resources, and the watch instead.
    let plain = render(&[]);
    assert!(plain.iter().all(|d| !kind(d).starts_with("Kafka")));
    assert!(
        plain
            .iter()
            .any(|d| kind(d) == "Deployment" && name(d).ends_with("-connectors-watch"))
    );
}

#[test]
fn the_dashboard_and_the_alerts_query_metrics_the_binaries_export() {
    use clinic::streams::metrics as m;
    let exported = [
        m::RECORDS_IN,
        m::RECORDS_OUT,
        m::LAG,
        m::DLQ,
        m::COMMIT_LATENCY,
        m::DEPENDENCY_UP,
        m::EFFECTS_PERFORMED,
        m::EFFECTS_FAILED,
        m::EFFECT_LATENCY,
        clinic::api::metrics::REQUESTS,
        clinic::api::metrics::LATENCY,
        clinic::ops::watch::RESTARTS,
        clinic::ops::watch::FAILED,
    ];
    let documents = render(&["-f", "helm/clinic/ci/ci-values.yaml"]);
    let dashboard = documents
        .iter()
        .find(|d| kind(d) == "ConfigMap" && name(d).ends_with("-dashboard"))
        .expect("the dashboard ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: serde_json::Value = serde_json::from_str(
        dashboard["data"]["clinic-suite.json"]
            .as_str()
            .expect("the dashboard"),
    )
    .expect("JSON");
    let mut queries: Vec<String> = json["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(queries.len() >= 10, "{queries:?}");
    let rules = documents
        .iter()
        .find(|d| kind(d) == "PrometheusRule")
        .expect("the alerts");
    queries.extend(
        rules["spec"]["groups"][0]["rules"]
            .as_sequence()
            .expect("rules")
            .iter()
            .filter_map(|r| r["expr"].as_str().map(str::to_owned)),
    );
    // Each alert's runbook is a section of docs/operators.md named after it.
    let operators =
        std::fs::read_to_string(clinic::testkit::repo_root(0).join("docs/operators.md"))
            .expect("docs/operators.md");
    for rule in rules["spec"]["groups"][0]["rules"]
        .as_sequence()
        .expect("rules")
    {
        let alert = rule["alert"].as_str().expect("an alert name");
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{alert} has no runbook_url"));
        assert!(
            url.ends_with(&format!("docs/operators.md#{}", alert.to_lowercase())),
            "{alert}: {url}"
        );
        assert!(
            operators.contains(&format!("\n### {alert}\n")),
            "docs/operators.md has no section ### {alert}"
        );
    }
    for query in &queries {
        for word in query.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("clinic_") {
                assert!(
                    exported.contains(&word),
                    "{word} (in {query}) is not a metric the binaries export"
                );
            }
        }
    }
}

#[test]
fn a_security_scan_of_the_rendered_chart_finds_nothing() {
    let root = clinic::testkit::repo_root(0);
    let manifests = helm(&[
        "template",
        "demo",
        "helm/clinic",
        "--namespace",
        "clinic",
        "--kube-version",
        "1.31.0",
        "-f",
        "helm/clinic/ci/ci-values.yaml",
    ]);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, manifests).expect("written");
    let scan = Command::new(root.join("scripts/checkov"))
        .arg("-f")
        .arg(&file)
        .args(["--config-file", "helm/clinic/.checkov.yaml"])
        .current_dir(&root)
        .output()
        .expect("scripts/checkov runs");
    let report = String::from_utf8_lossy(&scan.stdout);
    assert!(
        scan.status.success() && report.contains("Failed checks: 0"),
        "checkov (skips justified in helm/clinic/.checkov.yaml):\n{report}{}",
        String::from_utf8_lossy(&scan.stderr)
    );
    assert!(report.contains("Passed checks:"), "{report}");
}
