//! `clinic-permissions`: see the crate documentation.

fn main() -> std::process::ExitCode {
    clinic_permissions::app().main()
}
