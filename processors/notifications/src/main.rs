//! `clinic-notifications`: see the crate documentation.

fn main() -> std::process::ExitCode {
    clinic::telemetry::init();
    tracing::error!(
        processor = clinic_notifications::NAME,
        "The notifications processor is not implemented yet; nothing was consumed."
    );
    std::process::ExitCode::from(2)
}
