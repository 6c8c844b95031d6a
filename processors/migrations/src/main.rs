//! `clinic-migrations`: see the crate documentation.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    clinic::streams::app::run(clinic_migrations::processor::Migrations::factory).await
}
