//! The deletions processor with its documents on disk (`streams.state_dir`) over `<documents>`
//! patient documents in its changelog: each start's time to ready (`/readyz` 200), the records
//! it replayed, its peak RSS (`VmHWM`) and the state's size on disk. Prints figures; asserts
//! nothing. Needs the local stack.
//!
//! Run: `cargo bench --bench state [-- <documents>]` (default 1,000,000; the figure is
//! 10,000,000). The processor runs in a child process of this binary (so its memory is its
//! own), four times over the same state directory:
//! 1. first start: nothing on disk, the whole changelog restored into fjall;
//! 2. SIGKILLed at a random moment of a second first-start on a fresh directory midway through
//!    its restore, then restarted: the restore resumes from the last batch it flushed;
//! 3. a restart after a clean stop (SIGTERM): nothing to replay;
//! 4. a restart after SIGKILL while records flow in: only what the last flushed commit had not
//!    reached is replayed.
//!
//! For comparison, `cargo bench --bench restore` restarts it with its documents in memory.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clinic::endpoints::Endpoints;
use clinic::streams::Processor as _;
use clinic::streams::kafka::StreamsSettings;
use clinic::testkit;
use clinic_deletions::processor::Deletions;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

const CHILD: &str = "STATE_BENCH_CHILD";

fn deletions() -> Deletions {
    Deletions::new(Default::default())
}

/// Writes `documents` patient documents to the patients store's changelog, as deletions
/// stores them.
fn fill(brokers: &str, topic: &str, documents: usize) {
    use bson::oid::ObjectId;
    use clinic::streams::store::table_key;
    use clinic::streams::stored::document_value;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let clinics: Vec<ObjectId> = (0..40).map(|_| ObjectId::new()).collect();
    for n in 0..documents {
        let document = testkit::bench_patient(n, clinics[n % clinics.len()]);
        let key = table_key(document.get("_id").expect("an _id"));
        let value = document_value(&key, &document);
        let record = BaseRecord::to(topic).key(&key).payload(&value).partition(0);
        testkit::send_waiting(&producer, record);
    }
    producer.flush(Duration::from_secs(300)).expect("flushed");
}

/// A start of the processor over `dir`: the child, and its admin port.
fn start(endpoints: &Endpoints, prefix: &str, dir: &Path) -> (Child, u16, Instant) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let started = Instant::now();
    let child = Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD, "1")
        .env("CLINIC_KAFKA_BROKERS", &endpoints.kafka_brokers)
        .env("CLINIC__STREAMS__TOPIC_PREFIX", prefix)
        .env("CLINIC__STREAMS__STATE_DIR", dir)
        .env("CLINIC__STREAMS__INSTANCE_ID", "bench")
        .env("CLINIC__STREAMS__ADMIN_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the processor starts");
    (child, port, started)
}

/// `GET /readyz` and `/metrics` of the child on `port`.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

fn until_ready(child: &mut Child, port: u16, started: Instant) -> Duration {
    loop {
        if get(port, "/readyz").is_some_and(|(status, _)| status == 200) {
            return started.elapsed();
        }
        if let Some(status) = child.try_wait().expect("status") {
            panic!("the processor exited before it was ready: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn restored(port: u16) -> f64 {
    get(port, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("clinic_streams_restored_records_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// SIGTERM, and the child's peak RSS (MiB) it prints on the way out.
fn stop(child: Child) -> f64 {
    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let output = child.wait_with_output().expect("stopped");
    assert!(output.status.success(), "the processor failed to stop");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0)
}

fn disk_mib(dir: &Path) -> f64 {
    fn walk(path: &Path) -> u64 {
        std::fs::read_dir(path).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
    }
    walk(dir) as f64 / 1_048_576.0
}

/// One line of figures; `peak` is `None` for a start that was killed (it printed none).
fn report(what: &str, ready: Duration, restored: f64, peak: Option<f64>, dir: &Path) {
    let peak = peak.map_or_else(|| "  (killed)".to_owned(), |p| format!("{p:>6.1} MiB"));
    println!(
        "  {what:<52} ready in {:>6.2} s, {restored:>9.0} records replayed, peak RSS {peak}, state {:>7.0} MiB on disk",
        ready.as_secs_f64(),
        disk_mib(dir)
    );
}

async fn parent(documents: usize) {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let prefix = format!("{}.", testkit::unique("state"));
    let topology = deletions().topology();
    let topics = testkit::topics_of(&topology);
    let topics: Vec<(&str, i32)> = topics.iter().map(|t| (t.as_str(), 1)).collect();
    testkit::create_topics(&endpoints, &prefix, &topics)
        .await
        .expect("topics");
    let changelog = format!(
        "{prefix}{}",
        topology.changelog_topic(clinic_deletions::processor::PATIENT_STORE)
    );
    let filling = Instant::now();
    {
        let (brokers, changelog) = (endpoints.kafka_brokers.clone(), changelog.clone());
        tokio::task::spawn_blocking(move || fill(&brokers, &changelog, documents))
            .await
            .expect("filled");
    }
    println!(
        "state: deletions over {documents} patient documents on disk (filled in {:.0} s)",
        filling.elapsed().as_secs_f64()
    );
    let scratch = tempfile::tempdir_in(
        std::env::var("STATE_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()),
    )
    .expect("a state directory");
    let dir = scratch.path().join("a");

    // 1. The first start restores the whole changelog into fjall.
    let (mut child, port, started) = start(&endpoints, &prefix, &dir);
    let ready = until_ready(&mut child, port, started);
    let replayed = restored(port);
    let peak = stop(child);
    report(
        "first start (everything restored)",
        ready,
        replayed,
        Some(peak),
        &dir,
    );

    // 2. A first start on a fresh directory, killed midway through its restore, then restarted.
    let killed_dir = scratch.path().join("b");
    let (mut child, _, started) = start(&endpoints, &prefix, &killed_dir);
    std::thread::sleep(ready / 2);
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let killed_after = started.elapsed();
    let (mut child, port, started) = start(&endpoints, &prefix, &killed_dir);
    let ready2 = until_ready(&mut child, port, started);
    let replayed = restored(port);
    let peak = stop(child);
    report(
        &format!(
            "restart after SIGKILL {:.1} s into the first restore",
            killed_after.as_secs_f64()
        ),
        ready2,
        replayed,
        Some(peak),
        &killed_dir,
    );
    drop(std::fs::remove_dir_all(&killed_dir));

    // 3. A restart after a clean stop.
    let (mut child, port, started) = start(&endpoints, &prefix, &dir);
    let ready = until_ready(&mut child, port, started);
    let replayed = restored(port);
    // 4. Records flowing in, then SIGKILL, then a restart.
    let clinic = bson::oid::ObjectId::new();
    let inserts: Vec<(&str, clinic::cdc::ChangeEvent)> = (documents..documents + 20_000)
        .map(|n| {
            let document = testkit::bench_patient(n, clinic);
            let id = document.get("_id").expect("an _id").clone();
            (
                "clinic.patients",
                testkit::change(
                    clinic::cdc::Operation::Insert,
                    "patients",
                    id,
                    Some(document),
                ),
            )
        })
        .collect();
    testkit::publish_changes(&endpoints, &prefix, &inserts)
        .await
        .expect("published");
    std::thread::sleep(Duration::from_millis(300));
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    report(
        "restart after a clean stop (SIGTERM)",
        ready,
        replayed,
        None,
        &dir,
    );
    let (mut child, port, started) = start(&endpoints, &prefix, &dir);
    let ready = until_ready(&mut child, port, started);
    let replayed = restored(port);
    let peak = stop(child);
    report(
        "restart after SIGKILL with 20,000 inserts arriving",
        ready,
        replayed,
        Some(peak),
        &dir,
    );
}

/// The processor, until SIGTERM; prints its peak RSS (MiB) on the way out.
async fn child() {
    let settings: StreamsSettings = clinic::settings::load::<Settings>(None)
        .expect("settings")
        .streams;
    clinic::streams::runner::run(settings, deletions)
        .await
        .expect("the processor ran");
    println!("{:.1}", testkit::peak_rss_mib());
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Settings {
    #[serde(default)]
    streams: StreamsSettings,
}

#[tokio::main]
async fn main() {
    if std::env::var_os(CHILD).is_some() {
        child().await;
        return;
    }
    let documents = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    parent(documents).await;
}
