//! `clinic-deletions`: see the crate documentation.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    clinic::streams::app::run(clinic_deletions::processor::Deletions::factory).await
}
