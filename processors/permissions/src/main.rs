//! `clinic-permissions`: see the crate documentation.

fn main() -> std::process::ExitCode {
    clinic::telemetry::init();
    tracing::error!(
        processor = clinic_permissions::NAME,
        "The permissions processor is not implemented yet; nothing was consumed."
    );
    std::process::ExitCode::from(2)
}
