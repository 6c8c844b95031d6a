//! The clinic CRUD API (axum + the `mongodb` driver) over the `clinic` database, keeping the
//! Tidepool clinic.v1 contract (vendored at `docs/reference/clinic.v1.yaml`) for what it implements.
//!
//! [`Application::build`] connects, creates the indexes, binds the listener (port 0 in tests)
//! and returns the bound port; [`Application::run`] serves until the shutdown signal.
//! Every route but `/v1/openapi.json` needs a token ([`auth`]); errors are `{code,
//! message}` ([`error`]); request bodies and times are bounded by [`settings::HttpSettings`].
//! `/healthz`, `/readyz` and `/metrics` are served on a port of their own (`http.admin_listen`).

pub mod access;
pub mod auth;
pub mod clinicians;
pub mod clinics;
pub mod error;
pub mod extract;
pub mod invites;
pub mod limits;
pub mod metrics;
pub mod migrations;
pub mod openapi;
pub mod patients;
pub mod serve;
pub mod settings;
pub mod share_code;
pub mod store;
pub mod tags;
pub mod time;
pub mod users;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::get;
use bson::doc;

pub use settings::ApiSettings;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The collections.
    pub store: store::Store,
    /// Token verification.
    pub verifier: Arc<auth::Verifier>,
}

/// A built, bound API server.
pub struct Application {
    listener: tokio::net::TcpListener,
    router: Router,
    address: SocketAddr,
    admin_listener: tokio::net::TcpListener,
    admin_router: Router,
    admin_address: SocketAddr,
}

impl Application {
    /// Validates the settings, connects to the database, creates its indexes and binds.
    ///
    /// # Errors
    /// Bad settings, an unreachable database, a refused index, or an address in use.
    pub async fn build(settings: &ApiSettings) -> anyhow::Result<Self> {
        settings.validate()?;
        let verifier = Arc::new(auth::Verifier::new(&settings.auth)?);
        let client = mongodb::Client::with_uri_str(&settings.mongo.uri)
            .await
            .context("connecting to MongoDB")?;
        let store = store::Store::new(client.database(&settings.mongo.database));
        store
            .ensure_indexes()
            .await
            .context("creating the indexes (is MongoDB reachable? `scripts/stack up` locally)")?;
        let state = AppState { store, verifier };
        let admin_router = admin_router(state.clone());
        let router = router(state, settings);
        let listener = tokio::net::TcpListener::bind(settings.http.listen)
            .await
            .with_context(|| format!("binding {}", settings.http.listen))?;
        let address = listener.local_addr().context("reading the bound address")?;
        let admin_listener = tokio::net::TcpListener::bind(settings.http.admin_listen)
            .await
            .with_context(|| format!("binding {}", settings.http.admin_listen))?;
        let admin_address = admin_listener
            .local_addr()
            .context("reading the bound admin address")?;
        Ok(Self {
            listener,
            router,
            address,
            admin_listener,
            admin_router,
            admin_address,
        })
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The bound address of the operational endpoints.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        // The operational endpoints answer until the public server has finished.
        let admin = tokio::spawn(axum::serve(self.admin_listener, self.admin_router).into_future());
        serve::serve(self.listener, self.router, shutdown).await;
        admin.abort();
    }
}

fn router(state: AppState, settings: &ApiSettings) -> Router {
    let (v1, document) = operations();
    // Serialized once: the document does not change while the process runs.
    let document = axum::body::Bytes::from(
        serde_json::to_vec(&document).expect("BUG: the OpenAPI document serializes"),
    );
    let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
    Router::new()
        .merge(v1)
        .route(
            "/v1/openapi.json",
            get(move || std::future::ready((json, document.clone()))),
        )
        .fallback(|| async { error::ApiError::NotFound("no such route".into()) })
        // route_layer: after routing, so the matched template is known.
        .route_layer(axum::middleware::from_fn(metrics::record))
        .layer(DefaultBodyLimit::max(settings.http.body_limit_bytes))
        .layer(axum::middleware::map_response(error::method_not_allowed))
        .layer(axum::middleware::from_fn_with_state(
            settings.http.request_timeout,
            time_limit,
        ))
        .layer(axum::middleware::from_fn(serve::limits))
        .with_state(state)
}

/// Every operation the API serves, each stated once: its handler's `#[utoipa::path]` gives its
/// path and method to the router and to the OpenAPI document served at `/v1/openapi.json`
/// ([`openapi::ApiDoc`] adds the title and the security schemes).
pub fn operations() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi as _;
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(clinics::list, clinics::create))
        .routes(routes!(clinics::get_by_share_code))
        .routes(routes!(clinics::get, clinics::update, clinics::delete))
        .routes(routes!(clinicians::list, clinicians::create))
        .routes(routes!(
            clinicians::get,
            clinicians::update,
            clinicians::delete
        ))
        .routes(routes!(clinicians::clinics_of))
        .routes(routes!(clinicians::invites::invite))
        .routes(routes!(clinicians::invites::revoke))
        .routes(routes!(
            clinicians::invites::get_invited,
            clinicians::invites::associate,
            clinicians::invites::delete_invited
        ))
        .routes(routes!(patients::list, patients::create_custodial))
        .routes(routes!(
            patients::get,
            patients::create_from_user,
            patients::update,
            patients::delete
        ))
        .routes(routes!(patients::update_permissions))
        .routes(routes!(patients::delete_permission))
        .routes(routes!(patients::upload_reminder))
        .routes(routes!(
            patients::reviews::review,
            patients::reviews::revert
        ))
        .routes(routes!(patients::clinics_of))
        .routes(routes!(migrations::enable))
        .routes(routes!(migrations::trigger))
        .routes(routes!(migrations::list, migrations::add))
        .routes(routes!(migrations::get, migrations::update))
        .routes(routes!(users::delete, users::update))
        .routes(routes!(tags::create_tag))
        .routes(routes!(tags::update_tag, tags::delete_tag))
        .routes(routes!(tags::assign_tag))
        .routes(routes!(tags::unassign_tag))
        .routes(routes!(tags::create_site))
        .routes(routes!(tags::update_site, tags::delete_site))
        .routes(routes!(limits::get_mrn, limits::update_mrn))
        .routes(routes!(
            limits::get_count_settings,
            limits::update_count_settings
        ))
        .routes(routes!(limits::count))
        .routes(routes!(invites::send))
        .routes(routes!(invites::list))
        .routes(routes!(invites::accept, invites::decline))
        .split_for_parts()
}

/// The operational endpoints, on their own port: `/healthz` (the process answers), `/readyz`
/// (the database answers), `/metrics` (Prometheus text, the API's and the process's metrics).
fn admin_router(state: AppState) -> Router {
    let prometheus = crate::telemetry::prometheus();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route(
            "/metrics",
            get(move || std::future::ready(prometheus.render())),
        )
        .with_state(state)
}

/// Answers 408 (`{code, message}`) when a request takes longer than `limit`; the work in
/// progress is dropped at its next await.
async fn time_limit(
    State(limit): State<std::time::Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error::ApiError::Timeout(limit).into_response(),
    }
}

/// 200 once the database answers a ping.
async fn ready(State(state): State<AppState>) -> StatusCode {
    match state.store.db.run_command(doc! { "ping": 1 }).await {
        Ok(_) => StatusCode::OK,
        Err(error) => {
            tracing::warn!(error = %error, "Not ready: the database does not answer.");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::routing::get;

    use super::*;

    /// The time limit on a handler that outlasts it, over a real listener; deterministic, unlike
    /// racing a database query against a microsecond limit.
    #[tokio::test]
    async fn a_request_over_the_time_limit_is_answered_408_in_the_error_shape() {
        let router = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    "late"
                }),
            )
            .route("/fast", get(|| async { "on time" }))
            .layer(axum::middleware::from_fn_with_state(
                Duration::from_millis(50),
                time_limit,
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, router).await });

        let slow = reqwest::get(format!("http://{address}/slow"))
            .await
            .expect("answer");
        let status = slow.status();
        let body: serde_json::Value = slow.json().await.expect("JSON");
        let fast = reqwest::get(format!("http://{address}/fast"))
            .await
            .expect("answer");

        assert_eq!(status, reqwest::StatusCode::REQUEST_TIMEOUT);
        assert_eq!(body["code"], 408);
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("longer than")),
            "{body}"
        );
        assert_eq!(fast.text().await.expect("text"), "on time");
    }
}
