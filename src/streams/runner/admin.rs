//! The admin endpoint every processor binary serves: `/healthz` (the process runs), `/readyz`
//! (stores restored and no dependency away), `/metrics` (Prometheus text).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::Health;

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    RECORDER.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (tests); then this handle records nothing,
        // which only matters for what /metrics shows in that process.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Binds `addr` and serves the admin routes in the background; returns the bound address.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> anyhow::Result<SocketAddr> {
    let handle = prometheus();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(health): State<Arc<Health>>| async move {
                if let Some((dependency, away)) = health.outages.longest() {
                    let message = format!(
                        "waiting for the {} (unavailable for {} s)",
                        dependency.name(),
                        away.as_secs()
                    );
                    (StatusCode::SERVICE_UNAVAILABLE, message)
                } else if health.ready.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ready".to_owned())
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "restoring".to_owned())
                }
            }),
        )
        .route("/metrics", get(move || async move { handle.render() }))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin endpoint to {addr}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(error = %error, "The admin endpoint stopped.");
        }
    });
    Ok(bound)
}
