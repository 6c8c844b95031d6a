//! The public server loop, on hyper's HTTP/1 connection builder rather than `axum::serve`, which
//! fixes hyper's limits: hyper answers an over-long URI (414) or too many or too large headers
//! (431) itself, with an empty body, before any of our code runs. Here hyper's header limits are
//! raised above the API's own ([`MAX_URI_BYTES`], [`MAX_HEADER_BYTES`], [`MAX_HEADERS`]), which
//! [`limits`] enforces with the `{code, message}` body every other error has. What is beyond
//! hyper's raised limits still gets hyper's empty answer (a URI over 65,534 bytes, hyper's fixed
//! maximum; a request head over 1 MiB).

use std::future::Future;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::error::ApiError;

/// The longest request target (path and query) the API reads; a longer one is a 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) the API reads; more is a 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The most header fields the API reads; more is a 431.
pub const MAX_HEADERS: usize = 100;

/// hyper's limits, above the API's own so that [`limits`] answers first.
const HYPER_MAX_HEADERS: usize = 1_000;
const HYPER_MAX_BUF_BYTES: usize = 1024 * 1024;

/// Answers 414 or 431 (`{code, message}`) for a request over the API's limits.
pub async fn limits(request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > MAX_URI_BYTES {
        return ApiError::UriTooLong(MAX_URI_BYTES).into_response();
    }
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return ApiError::HeadersTooLarge {
            fields: MAX_HEADERS,
            bytes: MAX_HEADER_BYTES,
        }
        .into_response();
    }
    next.run(request).await
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the requests in flight
/// finish (each connection closes after its current request).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %error, "Could not accept a connection.");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(error = %error, "Could not set TCP_NODELAY.");
        }
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .max_headers(HYPER_MAX_HEADERS)
                .max_buf_size(HYPER_MAX_BUF_BYTES);
            let connection =
                builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(error = %error, "A connection ended with an error.");
            }
        });
        // Reap finished connections as we go, so the set holds only live ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::routing::get;

    use super::*;

    /// Shutdown stops accepting and lets the request in flight finish.
    #[tokio::test]
    async fn serving_stops_when_asked_and_finishes_the_request_in_flight() {
        // The handler says when it has the request, so shutdown comes while it is in flight
        // (a fixed sleep before the signal raced the connection on a busy machine).
        let entered = std::sync::Arc::new(tokio::sync::Notify::new());
        let handler_entered = std::sync::Arc::clone(&entered);
        let router = Router::new().route(
            "/slow",
            get(move || async move {
                handler_entered.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, async {
            let _ = stopped.await;
        }));
        let in_flight = tokio::spawn(reqwest::get(format!("http://{address}/slow")));
        entered.notified().await;

        stop.send(()).expect("the server listens for the signal");
        let answer = in_flight.await.expect("joined").expect("answered");
        let text = answer.text().await.expect("body");
        let finished = tokio::time::timeout(Duration::from_secs(5), server).await;

        assert_eq!(text, "done");
        assert!(
            finished.is_ok(),
            "the server stopped after its last request"
        );
        assert!(
            reqwest::get(format!("http://{address}/slow"))
                .await
                .is_err(),
            "nothing listens any more"
        );
    }
}
