//! The image as the chart runs it: every container `helm template` renders with the CI values
//! runs from the image built by `scripts/image` (`CLINIC_IMAGE`, or built here when unset),
//! through podman, with the container's args and environment, the rendered ConfigMap mounted
//! where the chart mounts it, the pod's user, a read-only root file system and no capabilities,
//! against the local stack. The desired-state hook's containers run to completion with exit 0;
//! the API, the four processors and the connectors' watch reach `/readyz` 200 on their admin port
//! and, on SIGTERM, exit
//! 0 within the pod's grace period. The image itself: user 65532, no shell, its OCI labels, the
//! SBOM inside.
//!
//! The CI values describe a production cluster (SASL brokers, a remote registry, SMTP at AWS),
//! so what points at infrastructure is pointed at the local stack (`--set`, each listed in
//! [`local_stack`]); Secrets the pods read are given local values ([`secret`]); a StatefulSet's
//! pod name (`metadata.name`) is `<statefulset>-0`. Everything else is as rendered.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use clinic::endpoints::Endpoints;
use serde_yaml_ng::Value;

/// The image to check: `CLINIC_IMAGE`, else the one `scripts/image` builds now.
fn image() -> String {
    if let Ok(image) = std::env::var("CLINIC_IMAGE") {
        return image;
    }
    let output = Command::new(root().join("scripts/image"))
        .current_dir(root())
        .output()
        .expect("scripts/image runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "scripts/image failed (set CLINIC_IMAGE to an image it built):\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("image: "))
        .expect("scripts/image prints the image")
        .to_owned()
}

fn root() -> PathBuf {
    clinic::testkit::repo_root(0)
}

/// `scripts/podman` (podman with the flags these machines need) with `args`.
fn podman(args: &[&str]) -> Output {
    Command::new(root().join("scripts/podman"))
        .args(args)
        .output()
        .expect("scripts/podman runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `--set`s that point the CI values' infrastructure at the local stack.
fn local_stack(endpoints: &Endpoints, prefix: &str, image: &str) -> Vec<String> {
    let (repository, tag) = image.rsplit_once(':').expect("an image NAME:TAG");
    [
        // The image under test, by tag (the CI values pin a digest of a registry's image).
        format!("image.repository={repository}"),
        format!("image.tag={tag}"),
        "image.digest=".to_owned(),
        // A topic prefix of this run's own, so nothing else on the stack is touched.
        format!("kafka.topicPrefix={prefix}"),
        // The local broker: plaintext (librdkafka leaves the SASL settings unused then).
        format!("kafka.brokers={}", endpoints.kafka_brokers),
        "kafka.librdkafka.security\\.protocol=plaintext".to_owned(),
        "kafka.sasl.existingSecret=".to_owned(),
        format!("schemaRegistry.url={}", endpoints.schema_registry_url()),
        format!("connect.url={}", endpoints.connect_url),
        // One broker: topics.yaml's `local` overlay (replication 1).
        "desiredState.environment=local".to_owned(),
        // Mailpit: plain SMTP without authentication.
        format!(
            "processors.notifications.settings.smtp.host={}",
            endpoints.smtp_host
        ),
        format!(
            "processors.notifications.settings.smtp.port={}",
            endpoints.smtp_port
        ),
        "processors.notifications.settings.smtp.tls=none".to_owned(),
        "processors.notifications.settings.smtp.username=".to_owned(),
        "processors.notifications.smtp.existingSecret=".to_owned(),
    ]
    .into_iter()
    .collect()
}

/// The local value of a Secret's key a pod reads.
fn secret(endpoints: &Endpoints, name: &str, key: &str) -> String {
    match (name, key) {
        ("clinic-mongo", "uri") => endpoints.mongo_uri.clone(),
        ("clinic-api-auth", "hs256-secret") => "a-local-hs256-secret-of-the-image-check".into(),
        // The local registry has no authentication and ignores credentials.
        ("clinic-registry", "username" | "password") => format!("local-{key}"),
        other => panic!("the chart reads a Secret the check has no local value for: {other:?}"),
    }
}

fn render(arguments: &[String]) -> Vec<Value> {
    let mut args = vec![
        "template".to_owned(),
        "demo".to_owned(),
        "helm/clinic".to_owned(),
        "--namespace".to_owned(),
        "clinic".to_owned(),
        "--kube-version".to_owned(),
        "1.31.0".to_owned(),
        "-f".to_owned(),
        "helm/clinic/ci/ci-values.yaml".to_owned(),
    ];
    for set in arguments {
        args.push("--set".to_owned());
        args.push(set.clone());
    }
    let output = Command::new(root().join("scripts/helm"))
        .args(&args)
        .current_dir(root())
        .output()
        .expect("scripts/helm runs");
    assert!(output.status.success(), "helm template: {}", text(&output));
    let yaml = String::from_utf8(output.stdout).expect("text");
    serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|document| serde::Deserialize::deserialize(document).expect("YAML"))
        .filter(|document: &Value| !document.is_null())
        .collect()
}

fn kind(document: &Value) -> &str {
    document["kind"].as_str().unwrap_or_default()
}

fn name(document: &Value) -> &str {
    document["metadata"]["name"].as_str().unwrap_or_default()
}

/// One container of a rendered pod, and how podman runs it.
struct Container {
    /// `<workload>/<container>`.
    label: String,
    args: Vec<String>,
    /// `podman run` options: user, read-only root, capabilities, mounts, environment.
    options: Vec<String>,
    /// The container port named `admin`, for long-running ones.
    admin_port: Option<u16>,
    grace: Duration,
    /// The directories standing in for its PersistentVolumeClaims.
    claims: Vec<PathBuf>,
}

/// The podman options for `container` of a pod whose spec is `pod`, its ConfigMaps written under
/// `volumes_dir`.
fn container(
    endpoints: &Endpoints,
    workload: &Value,
    pod: &Value,
    spec: &Value,
    config_maps: &BTreeMap<String, PathBuf>,
    scratch: &Path,
) -> Container {
    let label = format!(
        "{}/{}",
        name(workload),
        spec["name"].as_str().unwrap_or("?")
    );
    let pod_security = &pod["securityContext"];
    let security = &spec["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true, "{label}: runAsNonRoot");
    let user = pod_security["runAsUser"].as_u64().expect("runAsUser");
    let group = pod_security["runAsGroup"].as_u64().unwrap_or(user);
    assert_ne!(user, 0, "{label}: runs as root");
    let mut options = vec!["--user".to_owned(), format!("{user}:{group}")];
    let mut claimed = Vec::new();
    if security["readOnlyRootFilesystem"] == true {
        // Nothing writable that the pod does not mount: podman's own /tmp, /run tmpfs too.
        options.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    }
    if security["allowPrivilegeEscalation"] == false {
        options.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    for dropped in security["capabilities"]["drop"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        options.extend([
            "--cap-drop".into(),
            dropped.as_str().expect("a capability").into(),
        ]);
    }
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|v| (v["name"].as_str().expect("volume name"), v))
        .collect();
    let claims: Vec<&str> = workload["spec"]["volumeClaimTemplates"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|claim| claim["metadata"]["name"].as_str())
        .collect();
    for mount in spec["volumeMounts"].as_sequence().into_iter().flatten() {
        let volume_name = mount["name"].as_str().expect("mount name");
        let path = mount["mountPath"].as_str().expect("mountPath");
        if claims.contains(&volume_name) {
            // The pod's PersistentVolumeClaim: a directory of its own, writable by the pod's
            // group (fsGroup) as Kubernetes makes it.
            let group = pod_security["fsGroup"].as_u64().unwrap_or(group);
            let dir = scratch.join(format!("{}-{volume_name}", name(workload)));
            std::fs::create_dir_all(&dir).expect("a volume directory");
            std::os::unix::fs::chown(&dir, Some(0), u32::try_from(group).ok()).expect("chown");
            set_mode(&dir, 0o770);
            options.extend(["-v".into(), format!("{}:{path}", dir.display())]);
            claimed.push(dir);
            continue;
        }
        let volume = volumes
            .get(volume_name)
            .unwrap_or_else(|| panic!("{label}: no volume {volume_name}"));
        if let Some(map) = volume["configMap"]["name"].as_str() {
            let read_only = if mount["readOnly"] == true { ":ro" } else { "" };
            let dir = config_maps
                .get(map)
                .unwrap_or_else(|| panic!("{label}: no rendered ConfigMap {map}"));
            options.extend(["-v".into(), format!("{}:{path}{read_only}", dir.display())]);
        } else if !volume["emptyDir"].is_null() {
            options.extend(["--tmpfs".into(), path.to_owned()]);
        } else {
            panic!("{label}: a volume of a kind the check does not mount: {volume:?}");
        }
    }
    let pod_name = match kind(workload) {
        "StatefulSet" => format!("{}-0", name(workload)),
        _ => format!("{}-image-check", name(workload)),
    };
    for variable in spec["env"].as_sequence().into_iter().flatten() {
        let key = variable["name"].as_str().expect("env name");
        let value = if let Some(value) = variable["value"].as_str() {
            value.to_owned()
        } else if let Some(reference) = variable["valueFrom"]["secretKeyRef"].as_mapping() {
            let field = |f: &str| reference[&Value::from(f)].as_str().expect("secretKeyRef");
            secret(endpoints, field("name"), field("key"))
        } else if variable["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            pod_name.clone()
        } else {
            panic!("{label}: env {key} of a form the check does not know: {variable:?}");
        };
        options.extend(["--env".into(), format!("{key}={value}")]);
    }
    let admin_port = spec["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "admin")
        .and_then(|p| p["containerPort"].as_u64())
        .map(|p| u16::try_from(p).expect("a port"));
    Container {
        label,
        args: spec["args"]
            .as_sequence()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("an arg").to_owned())
            .collect(),
        options,
        admin_port,
        grace: Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30)),
        claims: claimed,
    }
}

/// A container started here, removed on drop whatever happened.
struct Running(String);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "0", &self.0]);
    }
}

fn run_args<'a>(
    container: &'a Container,
    image: &'a str,
    name: &'a str,
    detach: bool,
) -> Vec<&'a str> {
    let mut args = vec!["run", "--name", name, "--network", "host"];
    if detach {
        args.push("--detach");
    }
    args.extend(container.options.iter().map(String::as_str));
    args.push(image);
    args.extend(container.args.iter().map(String::as_str));
    args
}

/// `GET /readyz` on the local port: the status code, if anything answered.
fn readyz(port: u16) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// The state podman reports (`running`, `exited`, …) and the exit code.
fn state(name: &str) -> (String, i64) {
    let output = podman(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        name,
    ]);
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let (status, code) = text.split_once(' ').unwrap_or((&text, "-1"));
    (status.to_owned(), code.parse().unwrap_or(-1))
}

fn logs(name: &str) -> String {
    let output = podman(&["logs", "--tail", "30", name]);
    text(&output)
}

/// Runs a hook step to completion: its time, after checking the exit code.
fn run_to_completion(container: &Container, image: &str) -> Duration {
    let name = clinic::testkit::unique("image-hook");
    let _running = Running(name.clone());
    let started = Instant::now();
    let output = podman(&run_args(container, image, &name, false));
    assert!(
        output.status.success(),
        "{} exited with {:?}:\n{}",
        container.label,
        output.status.code(),
        text(&output)
    );
    started.elapsed()
}

/// Starts a long-running container, waits for `/readyz` 200, SIGTERMs it and waits for its exit:
/// the time to ready and the time to exit, after checking exit 0 within the grace period.
fn serve_then_drain(container: &Container, image: &str) -> (Duration, Duration) {
    let port = container
        .admin_port
        .unwrap_or_else(|| panic!("{}: no port named admin", container.label));
    assert!(
        readyz(port).is_none(),
        "port {port} already answers (a demo left running? `scripts/demo --keep` uses it)"
    );
    let name = clinic::testkit::unique("image-run");
    let running = Running(name.clone());
    let started = Instant::now();
    let output = podman(&run_args(container, image, &name, true));
    assert!(
        output.status.success(),
        "{}: {}",
        container.label,
        text(&output)
    );
    let ready = loop {
        if readyz(port) == Some(200) {
            break started.elapsed();
        }
        let (status, code) = state(&name);
        assert!(
            status == "running",
            "{} stopped ({status}, exit {code}) before it was ready:\n{}",
            container.label,
            logs(&name)
        );
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{} not ready after 90 s (/readyz {:?}):\n{}",
            container.label,
            readyz(port),
            logs(&name)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = podman(&["kill", "--signal", "TERM", &name]);
    assert!(
        output.status.success(),
        "{}: {}",
        container.label,
        text(&output)
    );
    let terminated = Instant::now();
    let (status, code) = loop {
        let (status, code) = state(&name);
        if status != "running" && status != "stopping" {
            break (status, code);
        }
        assert!(
            terminated.elapsed() < container.grace,
            "{} still running {:?} after SIGTERM (the pod's grace period):\n{}",
            container.label,
            container.grace,
            logs(&name)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // podman says `stopped` for a container it has not reaped yet, `exited` once it has.
    assert!(
        matches!(status.as_str(), "exited" | "stopped") && code == 0,
        "{} after SIGTERM: {status}, exit {code}:\n{}",
        container.label,
        logs(&name)
    );
    let drained = terminated.elapsed();
    drop(running);
    (ready, drained)
}

/// The image's own properties: non-root, no shell, labels, the SBOM.
fn check_the_image(image: &str) {
    let inspect = |format: &str| {
        let output = podman(&["image", "inspect", "--format", format, image]);
        assert!(output.status.success(), "{}", text(&output));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(inspect("{{.Config.User}}"), "65532:65532");
    for label in ["source", "revision", "version", "created"] {
        let value = inspect(&format!(
            "{{{{index .Config.Labels \"org.opencontainers.image.{label}\"}}}}"
        ));
        assert!(!value.is_empty() && value != "<no value>", "label {label}");
    }
    for shell in ["/bin/sh", "/bin/bash", "/usr/bin/dash"] {
        let name = clinic::testkit::unique("image-shell");
        let _running = Running(name.clone());
        let output = podman(&[
            "run",
            "--name",
            &name,
            "--entrypoint",
            shell,
            image,
            "-c",
            "true",
        ]);
        assert!(!output.status.success(), "the image has a shell: {shell}");
    }
    let name = clinic::testkit::unique("image-sbom");
    let _created = Running(name.clone());
    let output = podman(&["create", "--name", &name, image]);
    assert!(output.status.success(), "{}", text(&output));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = podman(&[
        "cp",
        &format!("{name}:/app/sbom"),
        &dir.path().display().to_string(),
    ]);
    assert!(output.status.success(), "/app/sbom: {}", text(&output));
    let files: Vec<String> = std::fs::read_dir(dir.path().join("sbom"))
        .expect("the SBOM directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    for binary in [
        "clinic",
        "clinic-permissions",
        "clinic-migrations",
        "clinic-deletions",
        "clinic-notifications",
    ] {
        let file = files
            .iter()
            .find(|f| f.starts_with(&format!("{binary}_bin")))
            .unwrap_or_else(|| panic!("no SBOM of {binary} in {files:?}"));
        let bom: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("sbom").join(file)).expect("readable"),
        )
        .expect("JSON");
        assert_eq!(bom["bomFormat"], "CycloneDX");
        assert!(
            bom["components"].as_array().is_some_and(|c| c.len() > 50),
            "{file}: the dependencies are listed"
        );
    }
}

#[test]
fn every_container_of_the_chart_runs_from_the_image_as_the_chart_says() {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let image = image();
    check_the_image(&image);
    let prefix = format!("{}.", clinic::testkit::unique("image"));
    let documents = render(&local_stack(&endpoints, &prefix, &image));

    let volumes = tempfile::tempdir().expect("a temporary directory");
    let mut config_maps = BTreeMap::new();
    for map in documents.iter().filter(|d| kind(d) == "ConfigMap") {
        let dir = volumes.path().join(name(map));
        std::fs::create_dir_all(&dir).expect("a directory");
        for (file, content) in map["data"].as_mapping().into_iter().flatten() {
            std::fs::write(
                dir.join(file.as_str().expect("a file name")),
                content.as_str().expect("text"),
            )
            .expect("written");
        }
        // Readable by the pod's user, as a ConfigMap volume is.
        set_world_readable(&dir);
        config_maps.insert(name(map).to_owned(), dir);
    }

    let mut report = Vec::new();
    // The hook first (topics, schemas, connectors: what the processors need), in its order.
    let hook = documents
        .iter()
        .find(|d| kind(d) == "Job")
        .expect("the desired-state hook");
    let pod = &hook["spec"]["template"]["spec"];
    let steps = pod["initContainers"]
        .as_sequence()
        .into_iter()
        .flatten()
        .chain(pod["containers"].as_sequence().into_iter().flatten());
    for spec in steps {
        let container = container(&endpoints, hook, pod, spec, &config_maps, volumes.path());
        assert_eq!(
            spec["image"].as_str(),
            Some(image.as_str()),
            "{}",
            container.label
        );
        let took = run_to_completion(&container, &image);
        report.push(format!(
            "{:<48} exit 0 in {:.1} s",
            container.label,
            took.as_secs_f64()
        ));
    }
    // Then every workload's containers, one at a time (they share the admin port number).
    let workloads = documents
        .iter()
        .filter(|d| matches!(kind(d), "Deployment" | "StatefulSet"));
    let mut served = 0;
    for workload in workloads {
        let pod = &workload["spec"]["template"]["spec"];
        for spec in pod["containers"].as_sequence().into_iter().flatten() {
            let container = container(
                &endpoints,
                workload,
                pod,
                spec,
                &config_maps,
                volumes.path(),
            );
            let (ready, drained) = serve_then_drain(&container, &image);
            for claim in &container.claims {
                let written = std::fs::read_dir(claim).expect("the volume").count();
                assert!(
                    written > 0,
                    "{}: nothing written to its volume",
                    container.label
                );
            }
            report.push(format!(
                "{:<48} ready in {:.1} s, exit 0 {:.1} s after SIGTERM (grace {} s)",
                container.label,
                ready.as_secs_f64(),
                drained.as_secs_f64(),
                container.grace.as_secs()
            ));
            served += 1;
        }
    }
    remove_connectors(&endpoints, &prefix);
    println!("image check of {image}:\n{}", report.join("\n"));
    assert_eq!(
        served, 6,
        "the API, the four processors and the connectors' watch"
    );
}

fn set_world_readable(dir: &Path) {
    set_mode(dir, 0o755);
    for entry in std::fs::read_dir(dir).expect("listing") {
        set_mode(&entry.expect("entry").path(), 0o644);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The hook created this run's connectors (named under its prefix); they go with it.
fn remove_connectors(endpoints: &Endpoints, prefix: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let connect = clinic::ops::connectors::Connect::new(&endpoints.connect_url);
        let names = connect.list().await.expect("Connect lists its connectors");
        let ours: Vec<String> = names
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .collect();
        assert!(
            !ours.is_empty(),
            "the hook created no connector under {prefix}"
        );
        for name in ours {
            connect.delete(&name).await.expect("deleted");
        }
    });
}
