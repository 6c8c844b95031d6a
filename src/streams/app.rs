//! The `main` every processor binary shares ([`App`]): the command line (`--help`, `--version`,
//! and subcommands a processor adds, such as notifications' `render`), the settings (defaults <
//! the TOML or JSON file named by `CLINIC_SETTINGS` < `CLINIC__SECTION__KEY` environment
//! variables) validated before anything connects, telemetry, and the processor run until
//! SIGTERM, with its effect stage beside it when it has one.
//!
//! A processor's `main.rs` is then a few lines:
//!
//! ```no_run
//! # use clinic::streams::{Context, Input, ProcessError, Processor, Topology};
//! # #[derive(Default, serde::Serialize, serde::Deserialize)]
//! # struct Settings { streams: clinic::streams::kafka::StreamsSettings }
//! # impl clinic::streams::app::Settings for Settings {
//! #     fn streams(&self) -> &clinic::streams::kafka::StreamsSettings { &self.streams }
//! # }
//! # struct Example;
//! # impl Processor for Example {
//! #     fn topology(&self) -> Topology { Topology::new("example") }
//! #     fn process(&mut self, _: Input<'_>, _: &mut Context<'_>) -> Result<(), ProcessError> { Ok(()) }
//! # }
//! fn main() -> std::process::ExitCode {
//!     clinic::streams::app::App::processor("clinic-example", "An example", |_: &Settings| {
//!         || Example
//!     })
//!     .main()
//! }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{CommandFactory as _, FromArgMatches as _, Subcommand};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::effect::{self, Effect, Stage};
use super::kafka::{Health, StreamsSettings};
use super::processor::Processor;
use super::runner;
use super::supervise::supervise;
use crate::settings::InvalidSetting;

/// A processor binary's settings.
pub trait Settings: Serialize + DeserializeOwned + Default + 'static {
    /// The runtime's part (`[streams]`).
    fn streams(&self) -> &StreamsSettings;

    /// Checks what deserializing cannot (the runtime's part included).
    ///
    /// # Errors
    /// The first bad setting.
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.streams().validate()
    }
}

/// Reads the settings `S` (defaults < `CLINIC_SETTINGS` file < environment) and validates them.
///
/// # Errors
/// An unreadable file, a malformed value, an unknown key, or an invalid setting.
pub fn load<S: Settings>() -> anyhow::Result<S> {
    let file = std::env::var_os("CLINIC_SETTINGS").map(std::path::PathBuf::from);
    let settings: S = crate::settings::load(file.as_deref())?;
    settings.validate()?;
    Ok(settings)
}

/// A binary with no subcommands of its own.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum NoCommands {}

/// What runs until shutdown, once the settings are loaded.
type Work = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
/// Builds the work from the settings, the shutdown flag and the health it reports into.
type Start<S> = Box<dyn FnOnce(&S, Arc<AtomicBool>, Arc<Health>) -> anyhow::Result<Work>>;
/// Runs a subcommand, with a way to load the settings if it needs them.
type RunCommand<S, C> = Box<dyn FnOnce(C, &dyn Fn() -> anyhow::Result<S>) -> anyhow::Result<()>>;

/// A processor binary: its processor, optionally an effect stage beside it, optionally
/// subcommands of its own.
pub struct App<S, C = NoCommands> {
    name: &'static str,
    about: &'static str,
    start: Start<S>,
    commands: Option<RunCommand<S, C>>,
}

#[derive(clap::Parser)]
struct Cli<C: Subcommand> {
    #[command(subcommand)]
    command: Option<C>,
}

impl<S: Settings> App<S> {
    /// The binary `name` (`about` for `--help`) running the processors `factory` makes from the
    /// settings.
    pub fn processor<P, F>(
        name: &'static str,
        about: &'static str,
        factory: impl FnOnce(&S) -> F + 'static,
    ) -> Self
    where
        P: Processor + 'static,
        F: Fn() -> P + Send + 'static,
    {
        Self {
            name,
            about,
            start: Box::new(move |settings: &S, shutdown, health| {
                let running = runner::run_until(
                    settings.streams().clone(),
                    factory(settings),
                    shutdown,
                    health,
                );
                Ok(Box::pin(running) as Work)
            }),
            commands: None,
        }
    }
}

impl<S: Settings, C: Subcommand + 'static> App<S, C> {
    /// Runs the effect stage `stage` builds from the settings beside the processor, in the same
    /// process: one admin endpoint (the processor's health; the stage keeps its own outage
    /// bookkeeping, since it follows the broker calls of another loop), one shutdown; when
    /// either stops (an error), the other is told to.
    #[must_use]
    pub fn with_effect<E: Effect>(
        self,
        stage: impl FnOnce(&S) -> anyhow::Result<(Stage, E)> + 'static,
    ) -> Self {
        let processing = self.start;
        Self {
            start: Box::new(move |settings: &S, shutdown, health| {
                let (stage, effect) = stage(settings)?;
                let processing = processing(settings, Arc::clone(&shutdown), health)?;
                let sending = effect::run_until(
                    settings.streams().clone(),
                    stage,
                    effect,
                    Arc::clone(&shutdown),
                    Arc::new(Health::default()),
                );
                Ok(Box::pin(side_by_side(processing, sending, shutdown)) as Work)
            }),
            ..self
        }
    }

    /// Adds the subcommands `C2`, run by `run` (given a loader of the settings, for the
    /// subcommands that need them) instead of the processor.
    pub fn with_commands<C2: Subcommand + 'static>(
        self,
        run: impl FnOnce(C2, &dyn Fn() -> anyhow::Result<S>) -> anyhow::Result<()> + 'static,
    ) -> App<S, C2> {
        App {
            name: self.name,
            about: self.about,
            start: self.start,
            commands: Some(Box::new(run)),
        }
    }

    /// Runs the processor (and its effect stage) with `settings` until `shutdown` is set, outside
    /// `main` (for tests and benches): no command line, no signal handler, no admin endpoint.
    ///
    /// # Errors
    /// The effect stage cannot be built, or what the loops return.
    pub fn run_until(
        self,
        settings: &S,
        shutdown: Arc<AtomicBool>,
        health: Arc<Health>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
        let work = settings
            .validate()
            .map_err(anyhow::Error::from)
            .and_then(|()| (self.start)(settings, shutdown, health));
        async move { work?.await }
    }

    /// Parses the command line and runs the subcommand, or the processor until SIGTERM; exits
    /// non-zero with the error's chain on stderr.
    pub fn main(self) -> ExitCode {
        let name = self.name;
        let matches = Cli::<C>::command()
            .name(name)
            .about(self.about)
            .version(env!("CARGO_PKG_VERSION"))
            .after_help(
                "Without a command: runs until SIGTERM. Settings: defaults < the TOML or JSON file \
                 named by CLINIC_SETTINGS < CLINIC__SECTION__KEY environment variables \
                 (CLINIC__STREAMS__BROKERS sets streams.brokers).",
            )
            .get_matches();
        let cli = Cli::<C>::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
        let result = match (cli.command, self.commands) {
            (Some(command), Some(run)) => run(command, &load::<S>),
            (Some(_), None) => Err(anyhow::anyhow!("BUG: a subcommand without a handler")),
            (None, _) => serve(self.start),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("{name}: {error:#}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Loads the settings, starts telemetry, and runs the work until SIGTERM.
fn serve<S: Settings>(start: Start<S>) -> anyhow::Result<()> {
    let settings = load::<S>()?;
    crate::telemetry::init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let streams = settings.streams().clone();
    runtime.block_on(supervise(&streams, |shutdown, health| async move {
        start(&settings, shutdown, health)?.await
    }))
}

/// Runs two loops until both end; when one ends (an error, or shutdown), the other is told to
/// stop through `shutdown`.
async fn side_by_side(
    first: impl Future<Output = anyhow::Result<()>>,
    second: impl Future<Output = anyhow::Result<()>>,
    shutdown: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let stop = |result: anyhow::Result<()>| {
        shutdown.store(true, Ordering::SeqCst);
        result
    };
    let (first, second) = tokio::join!(async { stop(first.await) }, async { stop(second.await) });
    first.and(second)
}
