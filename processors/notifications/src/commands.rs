//! The binary's own subcommands, beside running the processor: `render` shows an email as it
//! would be sent, without sending it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Subcommand;

use crate::config::Settings;
use crate::templates::{self, Templates};

/// `clinic-notifications <command>`.
#[derive(Debug, Subcommand)]
pub enum Command {
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

/// Runs `command`; `settings` loads the settings (the templates read the product's name and
/// URLs from them).
///
/// # Errors
/// Unreadable settings or variables, an unknown template, or a directory that cannot be written.
pub fn run(
    command: Command,
    settings: &dyn Fn() -> anyhow::Result<Settings>,
) -> anyhow::Result<()> {
    let Command::Render {
        template,
        vars,
        out,
        list,
    } = command;
    let Some(template) = template.filter(|_| !list) else {
        for (name, variables) in templates::CATALOGUE {
            println!("{name}: {}", variables.join(", "));
        }
        return Ok(());
    };
    let rendering = Templates::new(&settings()?.notifications);
    let names: Vec<&str> = match template.as_str() {
        "all" => templates::CATALOGUE.iter().map(|(n, _)| *n).collect(),
        name => vec![name],
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
        let email = rendering.render(name, "recipient@example.org", &variables)?;
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
