//! `clinic-migrations`: see the crate documentation.

fn main() -> std::process::ExitCode {
    clinic_migrations::app().main()
}
