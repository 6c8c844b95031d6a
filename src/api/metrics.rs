//! The API's metrics (served at `/metrics` with the process's other metrics) and request log:
//! requests by route template, method and status, and their latency. Labels are bounded: the
//! route is the matched template as the contract spells it (`/v1/clinics/{clinicId}`), never the
//! concrete path.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// Requests answered, by `route`, `method`, `status`.
pub const REQUESTS: &str = "clinic_api_requests_total";
/// Time to answer, seconds, by `route` and `method`.
pub const LATENCY: &str = "clinic_api_request_latency_seconds";

/// Middleware recording [`REQUESTS`] and [`LATENCY`], and logging each request by route
/// template (never the concrete path, which carries user ids) in a span per request (method,
/// route) that the handler's own logs carry too: WARN for a 5xx, DEBUG otherwise.
pub async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    // Whatever the handler logs (a database error, say) carries the route and the method.
    let span = tracing::info_span!("request", method = %method, route = %route);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16().to_string();
    let _entered = span.enter();
    if response.status().is_server_error() {
        tracing::warn!(status, latency = ?elapsed, "Request answered with a server error.");
    } else {
        tracing::debug!(status, latency = ?elapsed, "Request answered.");
    }
    ::metrics::histogram!(LATENCY, "route" => route.clone(), "method" => method.clone())
        .record(elapsed.as_secs_f64());
    ::metrics::counter!(REQUESTS, "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}
