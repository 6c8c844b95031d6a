//! The `clinic topics …` and `clinic schemas …` commands: load the file, observe the cluster or
//! registry, print the plan, apply it.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

use super::Plan;
use super::connectors::{ConnectorsPlan, DesiredConnector, Prune};
use super::schemas::SchemasPlan;
use super::topics::{TopicsFile, TopicsPlan, plan};
use super::{PlanError, kafka};

/// Output format for people or machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Output {
    /// Aligned text, coloured on a terminal.
    Text,
    /// One JSON document.
    Json,
}

/// What `clinic topics plan|apply` is asked to do.
#[derive(Debug, Clone)]
pub struct TopicsArgs {
    /// The desired-state file.
    pub file: PathBuf,
    /// The environment overlay to use.
    pub env: Option<String>,
    /// The deployment's topic prefix, replacing the file's (`CLINIC_TOPIC_PREFIX`).
    pub prefix: Option<String>,
    /// Plan deletion of topics under the prefix that the file does not list.
    pub prune: bool,
    /// Output format.
    pub output: Output,
}

/// Exit codes (also in `clinic topics --help`).
pub mod exit {
    /// Done; for `plan`, also: no changes (or changes without `--detailed-exitcode`).
    pub const OK: u8 = 0;
    /// An error: the file, the cluster, or a refused request.
    pub const ERROR: u8 = 1;
    /// `plan --detailed-exitcode`: there are changes to apply.
    pub const CHANGES: u8 = 2;
    /// Some difference cannot be changed in place (fewer partitions, replication factor); for
    /// `apply`, everything else was applied.
    pub const BLOCKED: u8 = 3;
}

/// `clinic topics plan`: prints the plan; returns the exit code.
///
/// # Errors
/// File, cluster or refused-request errors.
pub async fn plan_topics(
    brokers: &str,
    args: &TopicsArgs,
    detailed_exitcode: bool,
) -> Result<u8, PlanError> {
    let desired = desired_topics(args)?;
    let observed = kafka::observe(brokers).await?;
    let plan = plan(&desired, &observed, args.prune)?;
    print(&plan, args.output);
    Ok(plan_exit(&plan, detailed_exitcode))
}

/// `clinic topics apply`: prints the plan, asks before deleting (unless `yes`), applies it with
/// progress lines, and prints the plan left afterwards.
///
/// # Errors
/// File, cluster or refused-request errors.
pub async fn apply_topics(brokers: &str, args: &TopicsArgs, yes: bool) -> Result<u8, PlanError> {
    let desired = desired_topics(args)?;
    let observed = kafka::observe(brokers).await?;
    let plan = plan(&desired, &observed, args.prune)?;
    print(&plan, args.output);
    if !plan.has_changes() {
        return Ok(if plan.has_blockers() {
            exit::BLOCKED
        } else {
            exit::OK
        });
    }
    let deletes = plan
        .actions
        .iter()
        .filter(|a| matches!(a, super::topics::Action::Delete { .. }))
        .count();
    if deletes > 0 && !yes && !confirm(deletes)? {
        return Err(PlanError::Refused(
            "deletion not confirmed; nothing was applied".into(),
        ));
    }
    let text = args.output == Output::Text;
    kafka::apply(brokers, &plan, progress::<TopicsPlan>(args.output)).await?;
    let after = super::topics::plan(&desired, &kafka::observe(brokers).await?, args.prune)?;
    if text {
        applied(&after);
    }
    Ok(if after.has_blockers() {
        exit::BLOCKED
    } else {
        exit::OK
    })
}

fn print<P: Plan>(plan: &P, output: Output) {
    match output {
        Output::Text => println!("{}", plan.render(std::io::stdout().is_terminal())),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(plan).expect("BUG: plans serialize")
        ),
    }
}

/// The exit code of a `plan` command (see [`exit`]).
fn plan_exit<P: Plan>(plan: &P, detailed_exitcode: bool) -> u8 {
    if plan.has_blockers() {
        exit::BLOCKED
    } else if detailed_exitcode && plan.has_changes() {
        exit::CHANGES
    } else {
        exit::OK
    }
}

/// The closing line after an apply: the summary of the plan made again afterwards.
fn applied<P: Plan>(after: &P) {
    println!(
        "Applied. {}",
        after.render(false).lines().last().unwrap_or_default()
    );
}

/// The progress callback for `apply`: each step's plan line on stderr (text output only).
fn progress<P: Plan>(output: Output) -> impl FnMut(&P::Action) {
    move |action| {
        if output == Output::Text {
            let line = P::of(vec![action.clone()]).render(false);
            eprintln!("applying: {}", line.lines().next().unwrap_or_default());
        }
    }
}

/// Asks on the terminal; refuses when there is none.
fn confirm(deletes: usize) -> Result<bool, PlanError> {
    if !std::io::stdin().is_terminal() {
        return Err(PlanError::Refused(format!(
            "{deletes} topic(s) would be deleted; pass --yes to confirm when not on a terminal"
        )));
    }
    print!("Delete {deletes} topic(s) and their data? Type 'yes' to confirm: ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| PlanError::Refused(e.to_string()))?;
    Ok(answer.trim() == "yes")
}

/// `clinic schemas plan`: prints the plan; returns the exit code.
///
/// # Errors
/// File or registry errors.
pub async fn plan_schemas(
    registry_url: &str,
    args: &TopicsArgs,
    detailed_exitcode: bool,
) -> Result<u8, PlanError> {
    let registry = super::schemas::Registry::new(registry_url);
    let plan = registry
        .plan(&super::schemas::desired(
            &args.file,
            args.env.as_deref(),
            args.prefix.as_deref(),
        )?)
        .await?;
    print(&plan, args.output);
    Ok(plan_exit(&plan, detailed_exitcode))
}

/// `clinic schemas apply`: prints the plan and applies it; an incompatible schema is refused with
/// the registry's reason.
///
/// # Errors
/// File or registry errors, and the refusal.
pub async fn apply_schemas(registry_url: &str, args: &TopicsArgs) -> Result<u8, PlanError> {
    let registry = super::schemas::Registry::new(registry_url);
    let desired = super::schemas::desired(&args.file, args.env.as_deref(), args.prefix.as_deref())?;
    let plan = registry.plan(&desired).await?;
    print(&plan, args.output);
    let text = args.output == Output::Text;
    registry
        .apply(&plan, progress::<SchemasPlan>(args.output))
        .await?;
    if text && plan.has_changes() {
        applied(&registry.plan(&desired).await?);
    }
    Ok(exit::OK)
}

/// What `clinic connectors …` is asked to do.
#[derive(Debug, Clone)]
pub struct ConnectorsArgs {
    /// The directory of connector files.
    pub dir: PathBuf,
    /// With plan/apply: delete connectors no file describes.
    pub prune: bool,
    /// Output format.
    pub output: Output,
    /// The deployment's topic prefix, put in front of the topics the connectors read and their
    /// dead-letter topic (`CLINIC_TOPIC_PREFIX`).
    pub prefix: Option<String>,
}

/// The connectors of `args.dir`, reading the deployment's topics.
fn desired_connectors(args: &ConnectorsArgs) -> Result<Vec<DesiredConnector>, PlanError> {
    let desired = super::connectors::desired(&args.dir)?;
    Ok(match &args.prefix {
        Some(prefix) => desired
            .into_iter()
            .map(|c| c.of_deployment(prefix))
            .collect(),
        None => desired,
    })
}

/// What `--prune` deletes: the deployment's connectors no file describes (every such connector
/// without a prefix).
fn prune_of(args: &ConnectorsArgs) -> Prune<'_> {
    match (args.prune, &args.prefix) {
        (false, _) => Prune::Nothing,
        (true, Some(prefix)) => Prune::Under(prefix),
        (true, None) => Prune::Under(""),
    }
}

/// The topics of `args.file` in `args.env`, under the deployment's prefix when it is given.
fn desired_topics(args: &TopicsArgs) -> Result<super::topics::Desired, PlanError> {
    let desired = TopicsFile::load(&args.file)?.desired(args.env.as_deref())?;
    Ok(match &args.prefix {
        Some(prefix) => desired.with_prefix(prefix),
        None => desired,
    })
}

/// `clinic connectors plan` (`apply == false`) or `apply`: prints the plan, applies it.
///
/// # Errors
/// File or Connect errors.
pub async fn connectors_plan(
    connect_url: &str,
    args: &ConnectorsArgs,
    apply: bool,
    detailed_exitcode: bool,
) -> Result<u8, PlanError> {
    let connect = super::connectors::Connect::new(connect_url);
    let desired = desired_connectors(args)?;
    let prune = prune_of(args);
    let plan = connect.plan(&desired, prune).await?;
    print(&plan, args.output);
    if !apply {
        return Ok(plan_exit(&plan, detailed_exitcode));
    }
    let text = args.output == Output::Text;
    connect
        .apply(&plan, progress::<ConnectorsPlan>(args.output))
        .await?;
    if text && plan.has_changes() {
        applied(&connect.plan(&desired, prune).await?);
    }
    Ok(exit::OK)
}

/// `clinic connectors status [NAME]`: each connector's and task's state, with the trace of a
/// failed one; exit 3 when any is not RUNNING.
///
/// # Errors
/// Connect errors.
pub async fn connectors_status(
    connect_url: &str,
    args: &ConnectorsArgs,
    name: Option<&str>,
) -> Result<u8, PlanError> {
    let connect = super::connectors::Connect::new(connect_url);
    let names = match name {
        Some(name) => vec![name.to_owned()],
        None => desired_connectors(args)?
            .into_iter()
            .map(|c| c.name)
            .collect(),
    };
    let mut statuses = Vec::new();
    let mut healthy = true;
    for name in names {
        let status = connect.status(&name).await?;
        healthy &= status.as_ref().is_some_and(|s| {
            s.connector.state == "RUNNING" && s.tasks.iter().all(|t| t.state == "RUNNING")
        });
        if args.output == Output::Text {
            match &status {
                None => println!("{name}  not deployed"),
                Some(s) => {
                    println!("{name}  {}", s.connector.state);
                    for task in &s.tasks {
                        println!("  task {}  {}", task.id, task.state);
                        if let Some(trace) = &task.trace {
                            println!(
                                "    {}",
                                trace.lines().take(12).collect::<Vec<_>>().join("\n    ")
                            );
                        }
                    }
                }
            }
        }
        statuses.push((name, status));
    }
    if args.output == Output::Json {
        let map: std::collections::BTreeMap<_, _> = statuses.into_iter().collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&map).expect("BUG: statuses serialize")
        );
    }
    Ok(if healthy { exit::OK } else { exit::BLOCKED })
}

/// `clinic connectors restart NAME`.
///
/// # Errors
/// Connect errors.
pub async fn connectors_restart(connect_url: &str, name: &str) -> Result<u8, PlanError> {
    super::connectors::Connect::new(connect_url)
        .restart(name)
        .await?;
    println!("{name}: restart of the connector and its failed tasks requested.");
    Ok(exit::OK)
}

/// `clinic connectors delete NAME`.
///
/// # Errors
/// Connect errors.
pub async fn connectors_delete(connect_url: &str, name: &str) -> Result<u8, PlanError> {
    super::connectors::Connect::new(connect_url)
        .delete(name)
        .await?;
    println!("{name}: deleted.");
    Ok(exit::OK)
}

/// `clinic connectors validate`: every file's config through its plugin's validate endpoint,
/// errors printed per field; exit 3 when any field has one.
///
/// # Errors
/// File or Connect errors.
pub async fn connectors_validate(
    connect_url: &str,
    args: &ConnectorsArgs,
) -> Result<u8, PlanError> {
    let connect = super::connectors::Connect::new(connect_url);
    let mut valid = true;
    let mut report = std::collections::BTreeMap::new();
    for connector in desired_connectors(args)? {
        let errors = connect.validate(&connector).await?;
        valid &= errors.is_empty();
        if args.output == Output::Text {
            if errors.is_empty() {
                println!("{}  valid", connector.name);
            }
            for field in &errors {
                for error in &field.errors {
                    println!("{}  {}: {error}", connector.name, field.field);
                }
            }
        }
        report.insert(connector.name, errors);
    }
    if args.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("BUG: reports serialize")
        );
    }
    Ok(if valid { exit::OK } else { exit::BLOCKED })
}
