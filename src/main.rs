//! The `clinic` command: the CRUD API, the operators' tools, the smoke check and the demo's
//! story (`clinic --help`).

mod cli;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    cli::run().await
}
