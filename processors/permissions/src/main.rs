//! `clinic-permissions`: see the crate documentation.

use clinic_permissions::config::Settings;
use clinic_permissions::processor::Permissions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    clinic::streams::app::run(|settings: &Settings| {
        let inputs = settings.inputs;
        move || Permissions::new(inputs)
    })
    .await
}
