//! `clinic-deletions`: see the crate documentation.

fn main() -> std::process::ExitCode {
    clinic_deletions::app().main()
}
