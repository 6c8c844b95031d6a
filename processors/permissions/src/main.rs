//! `clinic-permissions`: see the crate documentation.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    clinic::streams::app::run(clinic_permissions::processor::Permissions::factory).await
}
