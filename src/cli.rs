//! The `clinic` command line: the clap tree and what each command runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use clinic::endpoints::Endpoints;
use clinic::ops::cli::{self, ConnectorsArgs, Output, TopicsArgs};

/// Operators' tools for the clinic suite.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the chain the processors rely on, end to end: Avro through the schema registry and
    /// Kafka, a MongoDB sink connector in Kafka Connect writing to MongoDB, and SMTP. Uses
    /// throwaway topics, connectors and collections and removes them. Exit 0 when all pass.
    Smoke,
    /// The demo's story on the local stack, through the API alone: a clinic's seven steps, each
    /// waiting for its gatekeeper rows, collections and emails, then a summary (needs the desired
    /// state applied, the API, the CDC emulator and the four processors running; scripts/demo
    /// does it).
    Scenario {
        /// Print, instead, a one-hour token for this user (10 hex characters), signed with
        /// CLINIC_API_SECRET as the story's own tokens are (scripts/demo --keep prints one).
        #[arg(long, value_name = "USER")]
        token: Option<String>,
    },
    /// Change events from a database without change streams (FerretDB): a development stand-in
    /// for the MongoDB source connector, never for production.
    Cdc {
        #[command(subcommand)]
        action: CdcCommand,
    },
    /// The Strimzi custom resources (KafkaTopic, KafkaConnector) for `topics.yaml` and the sink
    /// connectors of `connectors/`, with the Helm chart's placeholders for the cluster names and
    /// the topic prefix, on stdout (the chart ships it as helm/clinic/files/strimzi.yaml).
    Strimzi {
        /// The topics file.
        #[arg(long, default_value = "topics.yaml")]
        topics: PathBuf,
        /// The connectors' directory.
        #[arg(long, default_value = "connectors")]
        connectors: PathBuf,
    },
    /// Serve the clinic CRUD API. Settings: the TOML file named by CLINIC_SETTINGS, then
    /// CLINIC__HTTP__LISTEN, CLINIC__MONGO__URI, CLINIC__AUTH__HS256_SECRET, … (docs/api.md).
    /// Stops on SIGTERM/SIGINT after the requests in flight.
    Api,
    /// Topics as desired state (`topics.yaml`). Brokers from CLINIC_KAFKA_BROKERS; the
    /// deployment's topic prefix from CLINIC_TOPIC_PREFIX when set (else topics.yaml's).
    ///
    /// Exit codes: 0 done (plan: no changes, or changes without --detailed-exitcode);
    /// 1 error; 2 plan --detailed-exitcode found changes; 3 a difference cannot be changed in
    /// place (fewer partitions, replication factor).
    Topics {
        #[command(subcommand)]
        action: TopicsCommand,
    },
    /// Avro schemas named in `topics.yaml`, as subjects in the schema registry
    /// (CLINIC_REGISTRY_URL), under CLINIC_TOPIC_PREFIX when set (else topics.yaml's prefix).
    ///
    /// Exit codes as for `topics`; 3: a schema is incompatible with its subject's latest version.
    Schemas {
        #[command(subcommand)]
        action: SchemasCommand,
    },
    /// Kafka Connect connectors, one JSON file each in `connectors/` (CLINIC_CONNECT_URL); with
    /// CLINIC_TOPIC_PREFIX, they read the prefixed topics and dead-letter to the prefixed DLQ.
    ///
    /// Exit codes: 0 done; 1 error; 2 plan --detailed-exitcode found changes; 3 status: not all
    /// RUNNING, validate: a field has errors.
    Connectors {
        #[command(subcommand)]
        action: ConnectorsCommand,
    },
    /// Compare a sink's collections with what the clinic database says they should hold
    /// (CLINIC_MONGO_URI), and correct them through the sink topics (CLINIC_KAFKA_BROKERS,
    /// CLINIC_TOPIC_PREFIX). Exit codes: 0 they agree (or were corrected with --fix); 1 error;
    /// 3 they differ.
    Reconcile {
        #[command(subcommand)]
        what: ReconcileCommand,
    },
    /// Dead letters: the `*.dlq` topics of topics.yaml under CLINIC_TOPIC_PREFIX (each
    /// processor's and Connect's `connect.sink.dlq`), read back and sent home.
    ///
    /// Exit codes: 0 done; 1 error; 2 replay without a selection or --all.
    Dlq {
        #[command(subcommand)]
        action: DlqCommand,
    },
    /// One view of the whole suite: whether broker, registry, Connect, database and SMTP answer;
    /// each processor's readiness, partitions, lag, dead letters and last error (its admin
    /// `/status`; instances from CLINIC_PROCESSORS, `name=url,…`, by default the demo's ports
    /// 9101–9104); each connector and task, with its consumer group's lag.
    ///
    /// Exit codes: 0 healthy; 1 error; 3 something is unhealthy (each problem printed).
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The dataflow (source topics → processors → sink topics → connectors → collections) from
    /// `topics.yaml` and the connector files, and the checks that they agree. (That each
    /// processor's code reads and writes what `topics.yaml` says of it is checked by the test
    /// suite, which links the processor crates; this binary cannot, as they depend on it.)
    ///
    /// Exit codes: 0 consistent; 1 error; 3 the files disagree (each problem printed).
    Topology {
        /// `text`, `mermaid` or `json`.
        #[arg(long, value_enum, default_value = "text")]
        format: GraphFormat,
        /// The topics file.
        #[arg(long, default_value = "topics.yaml")]
        file: PathBuf,
        /// Connector directories.
        #[arg(long = "connectors", default_values = ["connectors", "connectors/source"])]
        connectors: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Each dead-letter topic: letters, how many were replayed, by reason and by source topic.
    List {
        #[command(flatten)]
        file: DlqFile,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The letters selected, decoded: where each is, where it came from (topic, partition,
    /// offset), who gave up on it and why. Keys, values and the record's own headers are
    /// personal data: shown only with --reveal.
    Show {
        #[command(flatten)]
        file: DlqFile,
        #[command(flatten)]
        selection: DlqSelection,
        /// Show keys, values and headers too.
        #[arg(long)]
        reveal: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Send the letters selected back to their source topic and partition, exactly once each
    /// (a letter replayed before is skipped: markers in `dlq.replayed`, written in the same
    /// transaction). Letters whose key has a later record in the source partition are skipped
    /// unless --include-superseded.
    Replay {
        #[command(flatten)]
        file: DlqFile,
        #[command(flatten)]
        selection: DlqSelection,
        /// Every letter (required when nothing else selects).
        #[arg(long)]
        all: bool,
        /// Also send letters a later record of their key supersedes.
        #[arg(long)]
        include_superseded: bool,
        /// Print what would be sent; send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

#[derive(Args)]
struct DlqFile {
    /// The topics file naming the dead-letter topics.
    #[arg(long, default_value = "topics.yaml")]
    file: PathBuf,
}

#[derive(Args)]
struct DlqSelection {
    /// Only this dead-letter topic (full name, as `list` prints it).
    #[arg(long)]
    dlq: Option<String>,
    /// Only letters from this source topic (full name).
    #[arg(long)]
    source: Option<String>,
    /// Only letters whose reason (error class) contains this.
    #[arg(long)]
    reason: Option<String>,
    /// Only letters at these offsets of their dead-letter topic: `FROM-TO` (inclusive) or one.
    #[arg(long, value_parser = offset_range)]
    offsets: Option<(i64, i64)>,
}

impl From<DlqSelection> for clinic::ops::dlq::Selection {
    fn from(s: DlqSelection) -> Self {
        Self {
            dlq: s.dlq,
            source: s.source,
            reason: s.reason,
            offsets: s.offsets,
        }
    }
}

fn offset_range(text: &str) -> Result<(i64, i64), String> {
    let number = |t: &str| {
        t.trim()
            .parse::<i64>()
            .map_err(|_| format!("{t:?} is not an offset"))
    };
    match text.split_once('-') {
        Some((from, to)) => Ok((number(from)?, number(to)?)),
        None => number(text).map(|at| (at, at)),
    }
}

#[derive(Subcommand)]
enum ReconcileCommand {
    /// Gatekeeper's patient and clinician permissions against the clinic's patients and
    /// clinicians, computed as the permissions processor computes them.
    Permissions {
        /// Send the corrections (rows to write, tombstones for rows to delete) to the sink
        /// topics, for the sink connectors to apply.
        #[arg(long)]
        fix: bool,
        /// The clinic service's database.
        #[arg(long, default_value = "clinic")]
        clinic_db: String,
        /// Gatekeeper's database.
        #[arg(long, default_value = "gatekeeper")]
        gatekeeper_db: String,
        /// How many ids of each kind of difference to show.
        #[arg(long, default_value_t = 5)]
        samples: usize,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GraphFormat {
    Text,
    Mermaid,
    /// `{"dataflow": {producers, consumers, connectors}, "problems": [...]}` for machines.
    Json,
}

#[derive(Subcommand)]
enum ConnectorsCommand {
    /// Show what apply would change.
    Plan {
        #[command(flatten)]
        common: ConnectorsCommon,
        /// Exit 2 when there are changes (for CI drift checks).
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Create or update connectors with idempotent PUTs (and delete with --prune).
    Apply {
        #[command(flatten)]
        common: ConnectorsCommon,
    },
    /// States of the connectors in the directory (or of NAME), with a failed task's trace.
    Status {
        #[command(flatten)]
        common: ConnectorsCommon,
        /// One connector.
        name: Option<String>,
    },
    /// Restart a connector and its failed tasks.
    Restart {
        /// The connector.
        name: String,
    },
    /// Check every file's config with its plugin's validate endpoint; errors per field.
    Validate {
        #[command(flatten)]
        common: ConnectorsCommon,
    },
    /// Delete a connector from Connect (its file stays).
    Delete {
        /// The connector.
        name: String,
    },
    /// Keep watching: restart connectors and tasks Connect reports FAILED, the first at once,
    /// then with a doubling wait per task up to --max-backoff (a sink that failed because the
    /// database or the broker was away comes back by itself). Only connectors under
    /// CLINIC_TOPIC_PREFIX when set. Logs each restart; serves /healthz and /metrics
    /// (clinic_connect_restarts_total, clinic_connect_failed_tasks) on --admin. Stops on
    /// SIGTERM/SIGINT.
    Watch {
        /// Seconds between two checks.
        #[arg(long, default_value_t = 10)]
        interval: u64,
        /// Seconds to wait before a task's second restart (doubling after).
        #[arg(long, default_value_t = 10)]
        first_backoff: u64,
        /// The longest wait between two restarts of a task, in seconds.
        #[arg(long, default_value_t = 300)]
        max_backoff: u64,
        /// Where to serve /healthz and /metrics (none when unset).
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
    },
}

#[derive(Args)]
struct ConnectorsCommon {
    /// The directory of connector files.
    #[arg(long, default_value = "connectors")]
    dir: PathBuf,
    /// Also delete connectors no file describes.
    #[arg(long)]
    prune: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

impl ConnectorsCommon {
    fn into_args(self) -> ConnectorsArgs {
        ConnectorsArgs {
            dir: self.dir,
            prune: self.prune,
            output: self.output,
            prefix: clinic::endpoints::topic_prefix(),
        }
    }
}

#[derive(Subcommand)]
enum SchemasCommand {
    /// Show what apply would register.
    Plan {
        #[command(flatten)]
        common: TopicsCommon,
        /// Exit 2 when there are changes (for CI drift checks).
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Register new schemas and set compatibility levels; refuse incompatible ones.
    Apply {
        #[command(flatten)]
        common: TopicsCommon,
    },
}

#[derive(Subcommand)]
enum CdcCommand {
    /// Follow the collections the source connectors in `connectors/source/` watch and publish
    /// their changes as those connectors would (CLINIC_MONGO_URI, CLINIC_KAFKA_BROKERS,
    /// CLINIC_REGISTRY_URL), polling every --interval-ms; until SIGTERM/SIGINT, or one poll with
    /// --once. Its position is kept in the topic `cdc-emulator.state` (docs/local-stack.md).
    Emulate {
        /// Milliseconds between two reads of the collections.
        #[arg(long, default_value_t = 500)]
        interval_ms: u64,
        /// One poll, then exit.
        #[arg(long)]
        once: bool,
        /// The source connectors' directory.
        #[arg(long, default_value = "connectors/source")]
        connectors: PathBuf,
        /// Prefix of the topics written (the connectors' `topic.prefix`).
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Show what apply would change.
    Plan {
        #[command(flatten)]
        common: TopicsCommon,
        /// Exit 2 when there are changes (for CI drift checks).
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Make the cluster match the file.
    Apply {
        #[command(flatten)]
        common: TopicsCommon,
        /// Confirm deletions without asking (needed off a terminal).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args)]
struct TopicsCommon {
    /// The desired-state file.
    #[arg(long, default_value = "topics.yaml")]
    file: PathBuf,
    /// Environment overlay from the file (e.g. `local`).
    #[arg(long, env = "CLINIC_ENV")]
    env: Option<String>,
    /// Also delete topics under the prefix that the file does not list (topics only).
    #[arg(long)]
    prune: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

impl TopicsCommon {
    fn into_args(self) -> TopicsArgs {
        TopicsArgs {
            file: self.file,
            env: self.env,
            prefix: clinic::endpoints::topic_prefix(),
            prune: self.prune,
            output: self.output,
        }
    }
}

fn report(error: clinic::ops::PlanError) -> u8 {
    eprintln!("error: {error}");
    cli::exit::ERROR
}

/// Parses the command line and runs the command.
///
/// # Errors
/// What the command fails with (operators' commands report theirs and return an exit code).
pub async fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    clinic::telemetry::init();
    let endpoints = Endpoints::from_env()?;
    let code = match cli.command {
        Command::Api => {
            let file = std::env::var_os("CLINIC_SETTINGS").map(PathBuf::from);
            let settings: clinic::api::ApiSettings = clinic::settings::load(file.as_deref())?;
            let app = clinic::api::Application::build(&settings).await?;
            tracing::info!(address = %app.address(), "API listening.");
            app.run(clinic::shutdown::signal()).await;
            cli::exit::OK
        }
        Command::Scenario { token: Some(user) } => {
            println!("{}", clinic::scenario::token(&user)?);
            cli::exit::OK
        }
        Command::Scenario { token: None } => {
            clinic::scenario::run(&endpoints).await?;
            cli::exit::OK
        }
        Command::Cdc {
            action:
                CdcCommand::Emulate {
                    interval_ms,
                    once,
                    connectors,
                    prefix,
                },
        } => {
            let settings = clinic::emulator::Settings {
                mongo_uri: endpoints.mongo_uri.clone(),
                brokers: endpoints.kafka_brokers.clone(),
                registry_url: endpoints.schema_registry_url(),
                topic_prefix: prefix,
                interval: std::time::Duration::from_millis(interval_ms),
            };
            let sources = clinic::emulator::sources(&connectors)?;
            let mut emulator = clinic::emulator::Emulator::start(settings, sources).await?;
            tracing::warn!(
                "The CDC emulator is a development stand-in for the MongoDB source connector; never run it in production."
            );
            tracing::info!(
                interval_ms,
                "CDC emulator following the source connectors' collections."
            );
            if once {
                let published = emulator.poll().await?;
                println!(
                    "published {} change events: {} inserts, {} updates, {} replaces, {} deletes",
                    published.total(),
                    published.inserts,
                    published.updates,
                    published.replaces,
                    published.deletes
                );
            } else {
                emulator.run(clinic::shutdown::signal()).await?;
            }
            cli::exit::OK
        }
        Command::Strimzi { topics, connectors } => {
            let topics = clinic::ops::topics::TopicsFile::load(&topics)?;
            let connectors = clinic::ops::connectors::desired(&connectors)?;
            print!(
                "{}",
                clinic::ops::strimzi::render(
                    &topics,
                    &connectors,
                    &clinic::ops::strimzi::Placeholders::helm()
                )?
            );
            cli::exit::OK
        }
        Command::Smoke => {
            clinic::smoke::report::run(&endpoints).await?;
            cli::exit::OK
        }
        Command::Topics { action } => {
            let result = match action {
                TopicsCommand::Plan {
                    common,
                    detailed_exitcode,
                } => {
                    cli::plan_topics(
                        &endpoints.kafka_brokers,
                        &common.into_args(),
                        detailed_exitcode,
                    )
                    .await
                }
                TopicsCommand::Apply { common, yes } => {
                    cli::apply_topics(&endpoints.kafka_brokers, &common.into_args(), yes).await
                }
            };
            result.unwrap_or_else(report)
        }
        Command::Schemas { action } => {
            let registry = endpoints.schema_registry_url();
            let result = match action {
                SchemasCommand::Plan {
                    common,
                    detailed_exitcode,
                } => cli::plan_schemas(&registry, &common.into_args(), detailed_exitcode).await,
                SchemasCommand::Apply { common } => {
                    cli::apply_schemas(&registry, &common.into_args()).await
                }
            };
            result.unwrap_or_else(report)
        }
        Command::Connectors { action } => {
            let url = &endpoints.connect_url;
            let result = match action {
                ConnectorsCommand::Plan {
                    common,
                    detailed_exitcode,
                } => cli::connectors_plan(url, &common.into_args(), false, detailed_exitcode).await,
                ConnectorsCommand::Apply { common } => {
                    cli::connectors_plan(url, &common.into_args(), true, false).await
                }
                ConnectorsCommand::Status { common, name } => {
                    cli::connectors_status(url, &common.into_args(), name.as_deref()).await
                }
                ConnectorsCommand::Restart { name } => cli::connectors_restart(url, &name).await,
                ConnectorsCommand::Validate { common } => {
                    cli::connectors_validate(url, &common.into_args()).await
                }
                ConnectorsCommand::Delete { name } => cli::connectors_delete(url, &name).await,
                ConnectorsCommand::Watch {
                    interval,
                    first_backoff,
                    max_backoff,
                    admin,
                } => {
                    let settings = clinic::ops::watch::WatchSettings {
                        interval: std::time::Duration::from_secs(interval),
                        first_backoff: std::time::Duration::from_secs(first_backoff),
                        max_backoff: std::time::Duration::from_secs(max_backoff),
                        prefix: clinic::endpoints::topic_prefix().unwrap_or_default(),
                    };
                    watch(url, settings, admin).await
                }
            };
            result.unwrap_or_else(report)
        }
        Command::Topology {
            format,
            file,
            connectors,
        } => topology(format, &file, &connectors),
        Command::Dlq { action } => dlq(&endpoints, action).await.unwrap_or_else(report),
        Command::Status { output } => {
            let processors = clinic::ops::status::processors_from_env();
            let status = clinic::ops::status::status(&endpoints, &processors).await;
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&status).expect("BUG: a status serializes")
                ),
                Output::Text => print!("{}", status.render()),
            }
            if status.problems.is_empty() {
                cli::exit::OK
            } else {
                cli::exit::BLOCKED
            }
        }
        Command::Reconcile {
            what:
                ReconcileCommand::Permissions {
                    fix,
                    clinic_db,
                    gatekeeper_db,
                    samples,
                    output,
                },
        } => {
            let options = clinic::ops::reconcile::Options {
                clinic_db,
                gatekeeper_db,
                samples,
            };
            reconcile(&endpoints, &options, fix, output)
                .await
                .unwrap_or_else(report)
        }
    };
    Ok(ExitCode::from(code))
}

/// `clinic dlq …`.
async fn dlq(endpoints: &Endpoints, action: DlqCommand) -> Result<u8, clinic::ops::PlanError> {
    use clinic::ops::dlq::DeadLetters;
    let (DlqCommand::List { file, .. }
    | DlqCommand::Show { file, .. }
    | DlqCommand::Replay { file, .. }) = &action;
    let topics = clinic::ops::topics::TopicsFile::load(&file.file)?;
    let prefix = clinic::endpoints::topic_prefix().unwrap_or_else(|| topics.prefix.clone());
    let letters = DeadLetters::new(&endpoints.kafka_brokers, &prefix, &topics);
    let json = |value: serde_json::Value| {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("BUG: JSON serializes")
        );
    };
    match action {
        DlqCommand::List { output, .. } => {
            let counts = letters.counts().await?;
            match output {
                Output::Json => json(serde_json::to_value(&counts).expect("BUG: counts serialize")),
                Output::Text => {
                    for c in &counts {
                        println!("{}: {} letters, {} replayed", c.topic, c.total, c.replayed);
                        for (reason, n) in &c.by_reason {
                            println!("  reason {reason}: {n}");
                        }
                        for (source, n) in &c.by_source {
                            println!("  from {source}: {n}");
                        }
                    }
                }
            }
        }
        DlqCommand::Show {
            selection,
            reveal,
            output,
            ..
        } => {
            let selected = letters.letters(&selection.into()).await?;
            match output {
                Output::Json => json(selected.iter().map(|l| l.to_json(reveal)).collect()),
                Output::Text => {
                    for letter in &selected {
                        print!("{}", letter.render(reveal));
                    }
                    println!("{} letters", selected.len());
                }
            }
        }
        DlqCommand::Replay {
            selection,
            all,
            include_superseded,
            dry_run,
            output,
            ..
        } => {
            let selection: clinic::ops::dlq::Selection = selection.into();
            if selection.is_everything() && !all {
                eprintln!(
                    "error: say which letters (--dlq, --source, --reason, --offsets) or --all"
                );
                return Ok(cli::exit::CHANGES);
            }
            let replay = letters
                .replay(&selection, include_superseded, dry_run)
                .await?;
            match output {
                Output::Json => {
                    json(serde_json::to_value(&replay).expect("BUG: a replay serializes"))
                }
                Output::Text => print!("{}", replay.render(dry_run)),
            }
        }
    }
    Ok(cli::exit::OK)
}

/// `clinic connectors watch`: the admin endpoint when asked, then the watch until a signal.
async fn watch(
    url: &str,
    settings: clinic::ops::watch::WatchSettings,
    admin: Option<std::net::SocketAddr>,
) -> Result<u8, clinic::ops::PlanError> {
    if let Some(address) = admin {
        let health = std::sync::Arc::new(clinic::streams::kafka::Health::default());
        health
            .ready
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let bound = clinic::streams::kafka::admin::serve(address, health)
            .await
            .map_err(|e| clinic::ops::PlanError::Refused(format!("admin endpoint: {e:#}")))?;
        tracing::info!(%bound, "Admin endpoint listening.");
    }
    tracing::info!(connect = url, ?settings, "Watching the connectors.");
    let restarts = clinic::ops::watch::Watch::new(url, settings)
        .run(clinic::shutdown::signal())
        .await;
    tracing::info!(restarts, "Stopped watching.");
    Ok(cli::exit::OK)
}

/// `clinic reconcile permissions`: the report, and with `fix` the corrections sent.
async fn reconcile(
    endpoints: &Endpoints,
    options: &clinic::ops::reconcile::Options,
    fix: bool,
    output: Output,
) -> Result<u8, clinic::ops::PlanError> {
    let client = mongodb::Client::with_uri_str(&endpoints.mongo_uri)
        .await
        .map_err(|e| clinic::ops::PlanError::Database(e.to_string()))?;
    let report = clinic::ops::reconcile::permissions(&client, options).await?;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("BUG: a report serializes")
        ),
        Output::Text => print!("{}", report.render()),
    }
    if report.agrees() {
        return Ok(cli::exit::OK);
    }
    if !fix {
        return Ok(cli::exit::BLOCKED);
    }
    let producer: rdkafka::producer::FutureProducer =
        clinic::endpoints::kafka_client(&endpoints.kafka_brokers)
            .set("enable.idempotence", "true")
            .create()
            .map_err(|e| clinic::ops::PlanError::Kafka(e.to_string()))?;
    let prefix = clinic::endpoints::topic_prefix().unwrap_or_default();
    let sent = clinic::ops::reconcile::fix(&producer, &prefix, &report).await?;
    eprintln!(
        "sent {sent} corrections to {prefix}sink.gatekeeper.*; the sink connectors apply them"
    );
    Ok(cli::exit::OK)
}

/// `clinic topology`: the dataflow the repository's files describe, and its inconsistencies.
fn topology(format: GraphFormat, file: &std::path::Path, connectors: &[PathBuf]) -> u8 {
    let dirs: Vec<&std::path::Path> = connectors.iter().map(PathBuf::as_path).collect();
    let dataflow = match clinic::ops::topology::Dataflow::load(file, &dirs) {
        Ok(dataflow) => dataflow,
        Err(error) => return report(error),
    };
    let problems = dataflow.problems(&std::collections::BTreeMap::new());
    match format {
        GraphFormat::Text => print!("{}", dataflow.render_text()),
        GraphFormat::Mermaid => print!("{}", dataflow.render_mermaid()),
        GraphFormat::Json => println!(
            "{}",
            serde_json::json!({ "dataflow": dataflow, "problems": problems })
        ),
    }
    if format != GraphFormat::Json {
        for problem in &problems {
            eprintln!("inconsistent: {problem}");
        }
    }
    if problems.is_empty() {
        cli::exit::OK
    } else {
        cli::exit::BLOCKED
    }
}
