//! The `clinic` command: operators' tools for the suite.

use clap::{Parser, Subcommand};
use clinic::endpoints::Endpoints;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    clinic::telemetry::init();
    match cli.command {
        Command::Smoke => clinic::smoke::report::run(&Endpoints::from_env()?).await,
    }
}
