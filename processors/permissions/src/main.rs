//! `clinic-permissions`: see the crate documentation.

use clinic_permissions::config::Settings;
use clinic_permissions::processor::Permissions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let file = std::env::var_os("CLINIC_SETTINGS").map(std::path::PathBuf::from);
    let settings: Settings = clinic::settings::load(file.as_deref())?;
    clinic::telemetry::init();
    let inputs = settings.inputs;
    clinic::streams::runner::run(settings.streams, move || Permissions::new(inputs)).await
}
