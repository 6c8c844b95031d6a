//! `clinic-notifications`: see the crate documentation. Without a subcommand it runs the
//! processor and its effect stage until SIGTERM; `render` shows an email without sending it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clinic::streams::app::Settings as _;
use clinic::streams::runner;
use clinic_notifications::config::Settings;
use clinic_notifications::templates::{self, Templates};

#[derive(Parser)]
#[command(
    name = "clinic-notifications",
    version,
    about = "The clinic suite's transactional emails"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Renders a template as it would be sent (subject, text and HTML) without sending it.
    Render {
        /// The template (one of `clinic-notifications render --list`), or `all`.
        template: Option<String>,
        /// A JSON object of variables; without it, sample values.
        #[arg(long)]
        vars: Option<PathBuf>,
        /// Write `<template>.subject.txt`, `.txt` and `.html` into this directory instead of
        /// printing.
        #[arg(long)]
        out: Option<PathBuf>,
        /// List the templates and their variables.
        #[arg(long)]
        list: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(),
        Some(Command::Render {
            template,
            vars,
            out,
            list,
        }) => render(template.as_deref(), vars, out, list),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("clinic-notifications: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn settings() -> anyhow::Result<Settings> {
    let file = std::env::var_os("CLINIC_SETTINGS").map(PathBuf::from);
    let settings: Settings = clinic::settings::load(file.as_deref())?;
    settings.validate().map_err(anyhow::Error::msg)?;
    Ok(settings)
}

/// The processor and its effect stage until SIGTERM, one admin endpoint for both.
#[tokio::main]
async fn run() -> anyhow::Result<()> {
    let settings = settings()?;
    clinic::telemetry::init();
    runner::supervise(&settings.streams.clone(), |shutdown, health| {
        clinic_notifications::run_until(settings, shutdown, health)
    })
    .await
}

fn render(
    template: Option<&str>,
    vars: Option<PathBuf>,
    out: Option<PathBuf>,
    list: bool,
) -> anyhow::Result<()> {
    if list || template.is_none() {
        for (name, variables) in templates::CATALOGUE {
            println!("{name}: {}", variables.join(", "));
        }
        return Ok(());
    }
    let settings = settings()?;
    let rendering = Templates::new(&settings.notifications);
    let names: Vec<&str> = match template {
        Some("all") => templates::CATALOGUE.iter().map(|(n, _)| *n).collect(),
        Some(name) => vec![name],
        None => Vec::new(),
    };
    let given: Option<BTreeMap<String, String>> = vars
        .map(|path| -> anyhow::Result<_> {
            let text = std::fs::read_to_string(&path)?;
            Ok(serde_json::from_str(&text)?)
        })
        .transpose()?;
    for name in names {
        let variables = given
            .clone()
            .unwrap_or_else(|| templates::sample_variables(name));
        let email = rendering
            .render(name, "recipient@example.org", &variables)
            .map_err(anyhow::Error::msg)?;
        match &out {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                std::fs::write(dir.join(format!("{name}.subject.txt")), &email.subject)?;
                std::fs::write(dir.join(format!("{name}.txt")), &email.text)?;
                std::fs::write(dir.join(format!("{name}.html")), &email.html)?;
                println!("{name}: written to {}", dir.display());
            }
            None => println!(
                "=== {name}\nSubject: {}\n--- text\n{}\n--- html\n{}\n",
                email.subject, email.text, email.html
            ),
        }
    }
    Ok(())
}
