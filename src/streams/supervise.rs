//! The process around a loop of the runtime (a processor's runner, an effect stage, or both):
//! SIGTERM/SIGINT set the shutdown flag the loop watches, the admin endpoint answers from the
//! loop's health, and a loop that has not finished `streams.shutdown_deadline` after the signal
//! is given up.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::kafka::{Health, StreamsSettings, admin};

/// Runs `work` until it ends, or until SIGTERM or SIGINT: sets the shutdown flag it is given on
/// the signal, serves the admin endpoint (`streams.admin_addr`) on its health, and gives up when
/// it has not finished `streams.shutdown_deadline` after the signal.
///
/// # Errors
/// `work`'s, or the admin address cannot be bound, or the deadline passed.
pub async fn supervise<W>(
    settings: &StreamsSettings,
    work: impl FnOnce(Arc<AtomicBool>, Arc<Health>) -> W,
) -> anyhow::Result<()>
where
    W: Future<Output = anyhow::Result<()>>,
{
    let shutdown = Arc::new(AtomicBool::new(false));
    let signal = Arc::clone(&shutdown);
    tokio::spawn(async move {
        crate::shutdown::signal().await;
        tracing::info!("Shutdown requested; finishing the current commit.");
        signal.store(true, Ordering::SeqCst);
    });
    let health = Arc::new(Health::default());
    if let Some(addr) = settings.admin_addr {
        let bound = admin::serve(addr, Arc::clone(&health)).await?;
        tracing::info!(address = %bound, "Admin endpoint listening.");
    }
    let deadline = settings.shutdown_deadline;
    let flag = Arc::clone(&shutdown);
    let work = work(shutdown, health);
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => result,
        () = async {
            while !flag.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(deadline).await;
        } => anyhow::bail!("shutdown did not finish within {deadline:?}"),
    }
}
