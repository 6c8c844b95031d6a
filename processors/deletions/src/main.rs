//! `clinic-deletions`: see the crate documentation.

use clinic_deletions::config::Settings;
use clinic_deletions::processor::Deletions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let file = std::env::var_os("CLINIC_SETTINGS").map(std::path::PathBuf::from);
    let settings: Settings = clinic::settings::load(file.as_deref())?;
    settings.validate().map_err(anyhow::Error::msg)?;
    clinic::telemetry::init();
    let inputs = settings.inputs;
    clinic::streams::runner::run(settings.streams, move || Deletions::new(inputs.clone())).await
}
