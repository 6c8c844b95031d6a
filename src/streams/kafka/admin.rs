//! The admin endpoint every processor binary serves, from its [`Health`]: `/healthz` (the
//! process runs), `/readyz` (stores restored and no dependency away), `/metrics` (Prometheus
//! text), `/status` (JSON for `clinic status`: readiness, outages, the assigned partitions and
//! their lag, dead letters, the last error).
//!
//! Three fixed routes on hyper directly rather than axum, so the processors link no web
//! framework (the API keeps axum).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};

use super::health::Health;

/// Binds `addr` and serves the admin routes in the background; returns the bound address.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> anyhow::Result<SocketAddr> {
    // Installed now, so what is recorded from here on is in the first scrape.
    crate::telemetry::prometheus();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin endpoint to {addr}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(error = %error, "The admin endpoint could not accept a connection.");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let health = Arc::clone(&health);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    let response = respond(&health, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(error) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(error = %error, "An admin connection ended with an error.");
                }
            });
        }
    });
    Ok(bound)
}

fn respond<B>(health: &Health, request: &Request<B>) -> Response<Full<Bytes>> {
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => (StatusCode::OK, "ok".to_owned()),
        (&Method::GET, "/readyz") => readiness(health),
        (&Method::GET, "/metrics") => (StatusCode::OK, crate::telemetry::prometheus().render()),
        (&Method::GET, "/status") => (
            StatusCode::OK,
            serde_json::to_string(&health.status_document()).expect("BUG: a status serializes"),
        ),
        (_, "/healthz" | "/readyz" | "/metrics" | "/status") => {
            (StatusCode::METHOD_NOT_ALLOWED, "GET only".to_owned())
        }
        _ => (StatusCode::NOT_FOUND, "not found".to_owned()),
    };
    let json = request.uri().path() == "/status" && status == StatusCode::OK;
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(if json {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        }),
    );
    response
}

fn readiness(health: &Health) -> (StatusCode, String) {
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
}
