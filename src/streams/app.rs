//! The `main` every processor binary shares: load the settings (defaults < the TOML file named
//! by `CLINIC_SETTINGS` < `CLINIC__SECTION__KEY` environment variables), validate them, start
//! telemetry, run the processor until SIGTERM.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::processor::Processor;
use super::runner::{self, RunnerConfig};

/// A processor binary's settings.
pub trait Settings: Serialize + DeserializeOwned + Default {
    /// The runner's part (`[streams]`).
    fn streams(&self) -> &RunnerConfig;

    /// Checks what deserializing cannot (the runner's part included).
    ///
    /// # Errors
    /// A message naming the first bad setting.
    fn validate(&self) -> Result<(), String> {
        self.streams().validate()
    }
}

/// Runs the processor `factory` builds from the settings `S`.
///
/// # Errors
/// Unreadable or invalid settings, or what [`runner::run`] returns.
pub async fn run<S, P, F>(factory: impl FnOnce(&S) -> F) -> anyhow::Result<()>
where
    S: Settings,
    P: Processor + 'static,
    F: Fn() -> P + Send + 'static,
{
    let file = std::env::var_os("CLINIC_SETTINGS").map(std::path::PathBuf::from);
    let settings: S = crate::settings::load(file.as_deref())?;
    settings.validate().map_err(anyhow::Error::msg)?;
    crate::telemetry::init();
    let factory = factory(&settings);
    runner::run(settings.streams().clone(), factory).await
}
