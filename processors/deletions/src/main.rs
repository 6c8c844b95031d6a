//! `clinic-deletions`: see the crate documentation.

use clinic_deletions::config::Settings;
use clinic_deletions::processor::Deletions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    clinic::streams::app::run(|settings: &Settings| {
        let inputs = settings.inputs.clone();
        move || Deletions::new(inputs.clone())
    })
    .await
}
