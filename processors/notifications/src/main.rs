//! `clinic-notifications`: see the crate documentation. Without a subcommand it runs the
//! processor and its effect stage until SIGTERM; `render` shows an email without sending it.

fn main() -> std::process::ExitCode {
    clinic_notifications::app().main()
}
