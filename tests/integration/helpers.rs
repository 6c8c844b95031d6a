//! Shared set-up for the smoke tests: endpoints, and a loud failure when a service is down.

use std::time::Duration;

use clinic::endpoints::Endpoints;
use tokio::net::TcpStream;

/// The stack's endpoints, after checking that each named service accepts connections.
///
/// # Panics
/// When a service does not answer, naming it and how to start the stack.
pub async fn stack(services: &[&str]) -> Endpoints {
    let endpoints = Endpoints::from_env().expect("endpoint settings");
    for service in services {
        let address = match *service {
            "kafka" => endpoints
                .kafka_brokers
                .split(',')
                .next()
                .unwrap_or_default()
                .to_owned(),
            "registry" => host_port(&endpoints.registry_url),
            "connect" => host_port(&endpoints.connect_url),
            "mongodb" => host_port(&endpoints.mongo_uri),
            "smtp" => format!("{}:{}", endpoints.smtp_host, endpoints.smtp_port),
            "mailpit" => host_port(&endpoints.mailpit_url),
            other => panic!("BUG: unknown service {other}"),
        };
        let connected =
            tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(&address)).await;
        assert!(
            matches!(connected, Ok(Ok(_))),
            "{service} is not reachable at {address}: start the local stack with `scripts/stack up` \
             (or point the CLINIC_* variables of `scripts/stack env` at running services)"
        );
    }
    endpoints
}

/// `host:port` of a URL such as `http://127.0.0.1:8081/x` or `mongodb://127.0.0.1:27017`.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap_or_default().to_owned()
}

/// A port nothing listens on now (for a child process's admin endpoint).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// The body of `GET url`, retried for up to 30 s while nothing answers (a child starting). Call
/// it from a blocking section of a multi-threaded Tokio test.
pub fn http_get(url: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    tokio::runtime::Handle::current().block_on(async {
        loop {
            match reqwest::get(url).await {
                Ok(response) => return response.text().await.expect("a body"),
                Err(error) => {
                    assert!(std::time::Instant::now() < deadline, "{url}: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    })
}

/// Runs the `clinic` binary with `args` on the local stack under the topic prefix `prefix`, from
/// the repository's root (its `topics.yaml`, `connectors/`); its exit code and stdout (stderr is
/// passed through).
pub fn clinic(args: &[&str], endpoints: &Endpoints, prefix: &str) -> (i32, String) {
    clinic_with(args, endpoints, prefix, &[])
}

/// [`clinic`], with more environment variables.
pub fn clinic_with(
    args: &[&str],
    endpoints: &Endpoints,
    prefix: &str,
    env: &[(&str, &str)],
) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_clinic"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(clinic::testkit::repo_root(0))
        .env("CLINIC_MONGO_URI", &endpoints.mongo_uri)
        .env("CLINIC_KAFKA_BROKERS", &endpoints.kafka_brokers)
        .env("CLINIC_CONNECT_URL", &endpoints.connect_url)
        .env("CLINIC_TOPIC_PREFIX", prefix)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("clinic runs");
    (
        output.status.code().expect("an exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}
